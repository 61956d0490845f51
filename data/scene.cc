#include "data/scene.h"

#include <algorithm>
#include <cmath>

#include "glog/logging.h"

namespace ut::data::scene {
namespace {

constexpr const char* kColorNames[kNumColors] = {"red", "green", "blue", "yellow", "purple"};
constexpr const char* kShapeNames[kNumShapes] = {"circle", "square", "triangle"};
constexpr uint8_t kColorRgb[kNumColors][3] = {
    {230, 40, 40}, {40, 190, 60}, {40, 90, 240}, {240, 220, 40}, {160, 60, 200}};
constexpr uint8_t kBackground[3] = {24, 24, 24};

// FNV-1a: a stable hash of feature names (std::hash is not stable).
uint64_t Fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ULL;
  return h;
}

std::string ObjKey(const Object& o) {
  return std::string(kColorNames[o.color]) + "_" + kShapeNames[o.shape];
}

// Whether pixel centre (px, py) lies inside `o` drawn with half extent r.
bool Inside(const Object& o, float cx, float cy, float r, float px, float py) {
  const float dx = px - cx, dy = py - cy;
  switch (o.shape) {
    case 0:  // circle
      return dx * dx + dy * dy <= r * r;
    case 1:  // square, a bit smaller so its area is close to the circle's
      return std::fabs(dx) <= 0.86f * r && std::fabs(dy) <= 0.86f * r;
    default: {  // triangle pointing up: apex (cx, cy - r), base at cy + r
      if (dy < -r || dy > r) return false;
      return std::fabs(dx) <= (dy + r) * 0.5f * 1.1f;
    }
  }
}

}  // namespace

const char* ColorName(int color) { return kColorNames[color]; }
const char* ShapeName(int shape) { return kShapeNames[shape]; }

bool CellFree(const Scene& scene, int cell) {
  for (const Object& o : scene.objects) {
    if (o.cell == cell) return false;
  }
  return true;
}

bool HasColorShape(const Scene& scene, int color, int shape) {
  for (const Object& o : scene.objects) {
    if (o.color == color && o.shape == shape) return true;
  }
  return false;
}

void SortObjects(Scene* scene) {
  std::sort(scene->objects.begin(), scene->objects.end(),
            [](const Object& a, const Object& b) { return a.cell < b.cell; });
}

bool AddRandomObject(Rng& rng, Scene* scene) {
  if (static_cast<int>(scene->objects.size()) >= kMaxObjects) return false;
  std::vector<int> free_cells;
  for (int c = 0; c < kNumCells; ++c) {
    if (CellFree(*scene, c)) free_cells.push_back(c);
  }
  std::vector<int> kinds;  // color * kNumShapes + shape, unused so far
  for (int k = 0; k < kNumColors * kNumShapes; ++k) {
    if (!HasColorShape(*scene, k / kNumShapes, k % kNumShapes)) kinds.push_back(k);
  }
  if (free_cells.empty() || kinds.empty()) return false;
  Object o;
  const int kind = kinds[rng.Below(kinds.size())];
  o.color = kind / kNumShapes;
  o.shape = kind % kNumShapes;
  o.small = rng.Below(2) == 1;
  o.cell = free_cells[rng.Below(free_cells.size())];
  o.jitter_x = static_cast<int>(rng.Below(3)) - 1;
  o.jitter_y = static_cast<int>(rng.Below(3)) - 1;
  scene->objects.push_back(o);
  SortObjects(scene);
  return true;
}

Scene RandomScene(Rng& rng, int num_objects) {
  CHECK(num_objects >= 1 && num_objects <= kMaxObjects) << num_objects;
  Scene scene;
  for (int i = 0; i < num_objects; ++i) CHECK(AddRandomObject(rng, &scene));
  return scene;
}

// out: [size, size, 3].
std::vector<uint8_t> Render(const Scene& scene, int size) {
  std::vector<uint8_t> rgb(static_cast<size_t>(size) * size * 3);
  for (size_t i = 0; i < rgb.size(); ++i) rgb[i] = kBackground[i % 3];
  const float cell = static_cast<float>(size) / kGrid;
  for (const Object& o : scene.objects) {
    const float cx = (o.cell % kGrid + 0.5f) * cell + o.jitter_x;
    const float cy = (o.cell / kGrid + 0.5f) * cell + o.jitter_y;
    const float r = (o.small ? 0.25f : 0.40f) * cell;
    const int x0 = std::max(0, static_cast<int>(cx - r) - 1);
    const int x1 = std::min(size - 1, static_cast<int>(cx + r) + 1);
    const int y0 = std::max(0, static_cast<int>(cy - r) - 1);
    const int y1 = std::min(size - 1, static_cast<int>(cy + r) + 1);
    for (int y = y0; y <= y1; ++y) {
      for (int x = x0; x <= x1; ++x) {
        if (!Inside(o, cx, cy, r, x + 0.5f, y + 0.5f)) continue;
        uint8_t* px = &rgb[(static_cast<size_t>(y) * size + x) * 3];
        for (int c = 0; c < 3; ++c) px[c] = kColorRgb[o.color][c];
      }
    }
  }
  return rgb;
}

std::string Phrase(const Object& o) {
  return std::string("a ") + (o.small ? "small " : "") + kColorNames[o.color] + " " +
         kShapeNames[o.shape];
}

std::string Name(const Object& o) {
  return std::string("the ") + kColorNames[o.color] + " " + kShapeNames[o.shape];
}

namespace {
// Relation of object a to the next object b in reading order.
const char* Relation(const Object& a, const Object& b) {
  return a.cell / kGrid == b.cell / kGrid ? "left of" : "above";
}
}  // namespace

std::string Caption(const Scene& scene) {
  std::string text;
  for (size_t i = 0; i < scene.objects.size(); ++i) {
    if (i > 0) {
      text += " ";
      text += Relation(scene.objects[i - 1], scene.objects[i]);
      text += " ";
    }
    text += Phrase(scene.objects[i]);
  }
  return text;
}

Bag SceneBag(const Scene& scene) {
  Bag bag;
  for (const Object& o : scene.objects) {
    bag.push_back({"obj:" + ObjKey(o), 1.0f});
    bag.push_back({std::string("color:") + kColorNames[o.color], 0.5f});
    bag.push_back({std::string("shape:") + kShapeNames[o.shape], 0.5f});
    bag.push_back({"size:" + ObjKey(o) + (o.small ? "_small" : "_large"), 0.5f});
  }
  bag.push_back({"count:" + std::to_string(scene.objects.size()), 0.5f});
  for (size_t i = 1; i < scene.objects.size(); ++i) {
    const Object& a = scene.objects[i - 1];
    const Object& b = scene.objects[i];
    bag.push_back({std::string("rel:") + Relation(a, b) + ":" + ObjKey(a) + ":" + ObjKey(b), 1.0f});
  }
  return bag;
}

Bag LayoutBag(const Scene& scene) {
  Bag bag;
  for (const Object& o : scene.objects) {
    bag.push_back({"cell:" + ObjKey(o) + ":" + std::to_string(o.cell), 0.5f});
  }
  return bag;
}

void Append(const Bag& from, float scale, Bag* to) {
  for (const Feature& f : from) to->push_back({f.key, f.weight * scale});
}

std::vector<float> Embed(const Bag& bag, const std::string& space, uint64_t seed, int dim) {
  std::vector<double> acc(dim, 0.0);
  for (const Feature& f : bag) {
    Rng g(Fnv1a(space + "|" + f.key) ^ (seed * 0x9e3779b97f4a7c15ULL));
    for (int i = 0; i < dim; ++i) acc[i] += f.weight * g.Normal();
  }
  double norm = 0.0;
  for (double v : acc) norm += v * v;
  norm = std::sqrt(norm);
  std::vector<float> out(dim);
  for (int i = 0; i < dim; ++i) out[i] = norm > 0 ? static_cast<float>(acc[i] / norm) : 0.0f;
  return out;
}

}  // namespace ut::data::scene

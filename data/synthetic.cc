// The synthetic scene data set (synthetic.h; format in docs/data_format.md).
#include "data/synthetic.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <set>

#include "core/base/rng.h"
#include "core/base/timer.h"
#include "data/image.h"
#include "data/manifest.h"
#include "data/sample.h"
#include "data/scene.h"
#include "data/tokenizer.h"
#include "glog/logging.h"

namespace ut::data {
namespace {

using scene::Bag;
using scene::Object;
using scene::Scene;

constexpr int kUniDim = 32;          // teacher: uni-modal part
constexpr int kCrossDim = 32;        // teacher: cross-modal part
constexpr double kCrossNoise = 0.05;  // norm of the per-slice noise on the cross part
constexpr uint64_t kOrderStream = 1000;  // offset of the slice-order streams (Mix's b)

// Independent stream per (seed, split, sample): samples do not depend on
// each other, so changing one count never changes another split.
uint64_t Mix(uint64_t a, uint64_t b, uint64_t c) {
  Rng r(a ^ (b * 0xd1b54a32d192ed03ULL) ^ (c * 0x9e3779b97f4a7c15ULL));
  return r.NextU64();
}

std::string ObjFeature(const Object& o) {
  return std::string("obj:") + scene::ColorName(o.color) + "_" + scene::ShapeName(o.shape);
}

float Round5(double v) { return static_cast<float>(std::round(v * 1e5) / 1e5); }

// Builds samples of one split and remembers the images to write.
class SampleMaker {
 public:
  // text_first: share of caption samples written [caption, image].
  SampleMaker(const SyntheticOptions& options, const std::string& split, bool negatives,
              double text_first)
      : options_(options), split_(split), negatives_(negatives), text_first_(text_first) {}

  // Fills *sample; appends (relative path, scene) of its images to images_.
  // order_rng decides only the slice order of caption samples, so the share
  // changes no other byte.
  void Make(int index, Rng& rng, Rng& order_rng, Sample* sample) {
    char id[64];
    std::snprintf(id, sizeof(id), "%s_%06d", split_.c_str(), index);
    sample->id = id;
    const double u = rng.Uniform();
    if (u < 0.40) {
      MakeCaption(rng, sample);
      if (order_rng.Uniform() < text_first_) {
        std::swap(sample->slices[0], sample->slices[1]);  // [caption, image]
        sample->slices[0].prompt = options_.text_first_prompt;
      }
    } else if (u < 0.75) {
      MakeVqa(rng, sample);
    } else {
      MakeStory(rng, sample);
    }
  }

  struct PendingImage {
    std::string path;  // relative to out_dir
    Scene scene;
  };
  std::vector<PendingImage>& images() { return images_; }

 private:
  int NumObjects(Rng& rng) {
    const double u = rng.Uniform();
    return u < 0.3 ? 1 : (u < 0.7 ? 2 : 3);
  }

  // [uni (kUniDim) ; cross (kCrossDim)], both L2-normalised; the cross part
  // carries a little per-slice noise so paired slices are close, not equal.
  std::vector<float> Teacher(const Bag& uni, const std::string& uni_space, const Bag& cross,
                             Rng& rng) {
    std::vector<float> u = scene::Embed(uni, uni_space, options_.seed, kUniDim);
    std::vector<float> c = scene::Embed(cross, "cross", options_.seed, kCrossDim);
    double norm = 0;
    for (float& v : c) {
      v += static_cast<float>(kCrossNoise / std::sqrt(kCrossDim) * rng.Normal());
      norm += static_cast<double>(v) * v;
    }
    norm = std::sqrt(norm);
    std::vector<float> t;
    t.reserve(kUniDim + kCrossDim);
    for (float v : u) t.push_back(Round5(v));
    for (float v : c) t.push_back(Round5(v / norm));
    return t;
  }

  Slice ImageSlice(const Sample& sample, const Scene& s, Rng& rng) {
    Slice slice;
    slice.kind = Slice::Kind::kImage;
    int panel = 0;
    for (const Slice& other : sample.slices) panel += other.kind == Slice::Kind::kImage;
    slice.image_path = "images/" + sample.id + "_" + std::to_string(panel) + ".png";
    Bag uni = scene::SceneBag(s);
    scene::Append(scene::LayoutBag(s), 1.0f, &uni);
    slice.teacher = Teacher(uni, "image", scene::SceneBag(s), rng);
    slice.teacher_split = kUniDim;
    images_.push_back({slice.image_path, s});
    return slice;
  }

  Slice TextSlice(const std::string& text, const Bag& uni, const Bag& cross, bool prompt,
                  Rng& rng) {
    Slice slice;
    slice.text = text;
    slice.prompt = prompt;
    slice.teacher = Teacher(uni, "text", cross, rng);
    slice.teacher_split = kUniDim;
    return slice;
  }

  void MakeCaption(Rng& rng, Sample* sample) {
    sample->task = "caption";
    const Scene s = scene::RandomScene(rng, NumObjects(rng));
    sample->slices.push_back(ImageSlice(*sample, s, rng));
    const Bag bag = scene::SceneBag(s);
    sample->slices.push_back(TextSlice(scene::Caption(s), bag, bag, false, rng));
    if (negatives_) sample->negatives = Negatives(s, rng);
  }

  // Wrong captions that reuse the true caption's words: swapped colours,
  // shapes or positions between two objects, a swapped relation word, or
  // (single object) another colour or size.
  std::vector<std::string> Negatives(const Scene& s, Rng& rng) {
    const std::string truth = scene::Caption(s);
    std::vector<std::string> candidates;
    const int n = static_cast<int>(s.objects.size());
    for (int i = 0; i < n; ++i) {
      for (int j = i + 1; j < n; ++j) {
        Scene t = s;
        std::swap(t.objects[i].color, t.objects[j].color);
        candidates.push_back(scene::Caption(t));
        t = s;
        std::swap(t.objects[i].shape, t.objects[j].shape);
        candidates.push_back(scene::Caption(t));
        t = s;
        std::swap(t.objects[i].cell, t.objects[j].cell);
        scene::SortObjects(&t);
        candidates.push_back(scene::Caption(t));
      }
    }
    for (const auto& [from, to] : {std::pair{"left of", "above"}, std::pair{"above", "left of"}}) {
      const size_t at = truth.find(from);
      if (at != std::string::npos) {
        candidates.push_back(truth.substr(0, at) + to + truth.substr(at + std::strlen(from)));
      }
    }
    if (n == 1) {
      Scene t = s;
      t.objects[0].small = !t.objects[0].small;
      candidates.push_back(scene::Caption(t));
      t = s;
      t.objects[0].color = (s.objects[0].color + 1 + rng.Below(scene::kNumColors - 1)) %
                           scene::kNumColors;
      candidates.push_back(scene::Caption(t));
    }
    std::vector<std::string> unique;
    std::set<std::string> seen = {truth};
    for (const std::string& c : candidates) {
      if (seen.insert(c).second) unique.push_back(c);
    }
    for (size_t i = unique.size(); i > 1; --i) std::swap(unique[i - 1], unique[rng.Below(i)]);
    if (unique.size() > 3) unique.resize(3);
    return unique;
  }

  void MakeVqa(Rng& rng, Sample* sample) {
    sample->task = "vqa";
    const Scene s = scene::RandomScene(rng, NumObjects(rng));
    sample->slices.push_back(ImageSlice(*sample, s, rng));
    // Objects whose shape / colour is unique in the scene can be asked about.
    std::vector<int> unique_shape, unique_color;
    for (int i = 0; i < static_cast<int>(s.objects.size()); ++i) {
      int same_shape = 0, same_color = 0;
      for (const Object& o : s.objects) {
        same_shape += o.shape == s.objects[i].shape;
        same_color += o.color == s.objects[i].color;
      }
      if (same_shape == 1) unique_shape.push_back(i);
      if (same_color == 1) unique_color.push_back(i);
    }
    std::vector<int> kinds = {2, 3};  // count, size
    if (!unique_shape.empty()) kinds.push_back(0);
    if (!unique_color.empty()) kinds.push_back(1);
    std::sort(kinds.begin(), kinds.end());
    const int kind = kinds[rng.Below(kinds.size())];
    static constexpr const char* kNumbers[] = {"zero", "one", "two", "three"};
    std::string question, answer;
    Bag q_bag, a_bag;
    if (kind == 0) {
      const Object& o = s.objects[unique_shape[rng.Below(unique_shape.size())]];
      question = std::string("what color is the ") + scene::ShapeName(o.shape) + " ?";
      answer = scene::ColorName(o.color);
      q_bag = {{"ask:color"}, {std::string("shape:") + scene::ShapeName(o.shape)}};
      a_bag = {{std::string("color:") + answer}, {std::string("shape:") + scene::ShapeName(o.shape)}};
    } else if (kind == 1) {
      const Object& o = s.objects[unique_color[rng.Below(unique_color.size())]];
      question = std::string("what shape is the ") + scene::ColorName(o.color) + " object ?";
      answer = scene::ShapeName(o.shape);
      q_bag = {{"ask:shape"}, {std::string("color:") + scene::ColorName(o.color)}};
      a_bag = {{std::string("shape:") + answer}, {std::string("color:") + scene::ColorName(o.color)}};
    } else if (kind == 2) {
      question = "how many objects are there ?";
      answer = kNumbers[s.objects.size()];
      q_bag = {{"ask:count"}};
      a_bag = {{"count:" + std::to_string(s.objects.size())}};
    } else {
      const Object& o = s.objects[rng.Below(s.objects.size())];
      question = "is " + scene::Name(o) + " small ?";
      answer = o.small ? "yes" : "no";
      q_bag = {{"ask:size"}, {std::string("color:") + scene::ColorName(o.color)},
               {std::string("shape:") + scene::ShapeName(o.shape)}};
      a_bag = {{std::string("answer:") + answer}, {"ask:size"}};
    }
    sample->slices.push_back(TextSlice(question, q_bag, q_bag, true, rng));
    sample->slices.push_back(TextSlice(answer, a_bag, a_bag, false, rng));
  }

  // One change between panels; returns its sentence and semantic event bag.
  std::pair<std::string, Bag> Change(Rng& rng, Scene* s) {
    enum { kMove, kRecolor, kAdd, kRemove };
    static constexpr int kStep[4][2] = {{-1, 0}, {1, 0}, {0, -1}, {0, 1}};  // dx, dy
    static constexpr const char* kDir[4] = {"left", "right", "up", "down"};
    std::vector<std::pair<int, int>> moves;  // (object, direction)
    for (int i = 0; i < static_cast<int>(s->objects.size()); ++i) {
      const int col = s->objects[i].cell % scene::kGrid, row = s->objects[i].cell / scene::kGrid;
      for (int d = 0; d < 4; ++d) {
        const int c = col + kStep[d][0], r = row + kStep[d][1];
        if (c < 0 || c >= scene::kGrid || r < 0 || r >= scene::kGrid) continue;
        if (scene::CellFree(*s, r * scene::kGrid + c)) moves.push_back({i, d});
      }
    }
    std::vector<int> kinds = {kRecolor};
    if (!moves.empty()) kinds.push_back(kMove);
    if (static_cast<int>(s->objects.size()) < scene::kMaxObjects) kinds.push_back(kAdd);
    if (s->objects.size() > 1) kinds.push_back(kRemove);
    std::sort(kinds.begin(), kinds.end());
    const int kind = kinds[rng.Below(kinds.size())];
    if (kind == kMove) {
      const auto [i, d] = moves[rng.Below(moves.size())];
      Object& o = s->objects[i];
      const std::string text = scene::Name(o) + " moves " + kDir[d];
      Bag event = {{"event:move"}, {std::string("dir:") + kDir[d]},
                   {ObjFeature(o)}};
      o.cell += kStep[d][0] + kStep[d][1] * scene::kGrid;
      scene::SortObjects(s);
      return {text, event};
    }
    if (kind == kRecolor) {
      const int i = static_cast<int>(rng.Below(s->objects.size()));
      Object& o = s->objects[i];
      std::vector<int> colors;
      for (int c = 0; c < scene::kNumColors; ++c) {
        if (!scene::HasColorShape(*s, c, o.shape)) colors.push_back(c);
      }
      const int to = colors[rng.Below(colors.size())];  // never empty: 5 colours, <= 3 objects
      const std::string text = scene::Name(o) + " turns " + scene::ColorName(to);
      Bag event = {{"event:recolor"}, {std::string("color:") + scene::ColorName(to)},
                   {ObjFeature(o)}};
      o.color = to;
      return {text, event};
    }
    if (kind == kAdd) {
      const Scene before = *s;
      CHECK(scene::AddRandomObject(rng, s));
      for (const Object& o : s->objects) {
        if (!scene::HasColorShape(before, o.color, o.shape)) {
          return {scene::Phrase(o) + " appears", {{"event:add"}, {ObjFeature(o)}}};
        }
      }
      LOG(FATAL) << "AddRandomObject added nothing";
    }
    const int i = static_cast<int>(rng.Below(s->objects.size()));
    const Object o = s->objects[i];
    s->objects.erase(s->objects.begin() + i);
    return {scene::Name(o) + " disappears",
            {{"event:remove"},
             {ObjFeature(o)}}};
  }

  void MakeStory(Rng& rng, Sample* sample) {
    sample->task = "story";
    Scene s = scene::RandomScene(rng, 1 + static_cast<int>(rng.Below(2)));
    const int panels = 2 + static_cast<int>(rng.Below(2));
    sample->slices.push_back(ImageSlice(*sample, s, rng));
    const Bag first = scene::SceneBag(s);
    sample->slices.push_back(TextSlice(scene::Caption(s), first, first, false, rng));
    for (int p = 1; p < panels; ++p) {
      const auto [text, event] = Change(rng, &s);
      sample->slices.push_back(ImageSlice(*sample, s, rng));
      // The sentence means the event and, weaker, the scene it leads to.
      Bag uni = event;
      scene::Append(scene::SceneBag(s), 0.5f, &uni);
      Bag cross = scene::SceneBag(s);
      scene::Append(event, 0.5f, &cross);
      sample->slices.push_back(TextSlice(text, uni, cross, false, rng));
    }
  }

  const SyntheticOptions& options_;
  std::string split_;
  bool negatives_;
  double text_first_;
  std::vector<PendingImage> images_;
};

absl::Status MakeDir(const std::string& path) {
  if (mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) {
    return absl::PermissionDeniedError(absl::StrCat("synthetic: cannot create directory ", path,
                                                    ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::Status MakeDirs(const std::string& path) {
  for (size_t at = path.find('/', 1); at != std::string::npos; at = path.find('/', at + 1)) {
    RETURN_IF_ERROR(MakeDir(path.substr(0, at)));
  }
  return MakeDir(path);
}

}  // namespace

absl::Status GenerateSynthetic(const SyntheticOptions& options) {
  if (options.out_dir.empty()) {
    return absl::InvalidArgumentError("synthetic: out_dir is empty; say where to write the data");
  }
  if (!(options.text_first_captions >= 0.0 && options.text_first_captions <= 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "synthetic: text_first_captions is a share of caption samples and must be in [0, 1] "
        "(got ", options.text_first_captions, ")"));
  }
  if (options.image_size < 8 || options.num_train < 1 || options.num_val < 0 ||
      options.num_test < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "synthetic: need image_size >= 8 and num_train >= 1 (got image_size=", options.image_size,
        ", num_train=", options.num_train, ", num_val=", options.num_val,
        ", num_test=", options.num_test, ")"));
  }
  Timer timer;
  RETURN_IF_ERROR(MakeDirs(options.out_dir + "/images"));
  struct Split {
    const char* name;
    int count;
    bool negatives;
  };
  const Split splits[] = {{"train", options.num_train, false},
                          {"val", options.num_val, false},
                          {"test", options.num_test, true}};
  std::vector<std::string> corpus;  // train text, for the tokenizer
  for (int split_index = 0; split_index < 3; ++split_index) {
    const Split& split = splits[split_index];
    // Evaluation defines its tasks on image-first samples: only train
    // captions may come text-first.
    SampleMaker maker(options, split.name, split.negatives,
                      split_index == 0 ? options.text_first_captions : 0.0);
    const std::string manifest = options.out_dir + "/" + split.name + ".jsonl";
    std::ofstream out(manifest, std::ios::trunc);
    for (int i = 0; i < split.count; ++i) {
      Rng rng(Mix(options.seed, split_index + 1, i));
      Rng order_rng(Mix(options.seed, split_index + 1 + kOrderStream, i));
      Sample sample;
      maker.Make(i, rng, order_rng, &sample);
      out << SampleToJsonLine(sample) << '\n';
      if (split_index == 0) {
        for (const Slice& s : sample.slices) {
          if (s.kind == Slice::Kind::kText) corpus.push_back(s.text);
        }
      }
      for (const auto& image : maker.images()) {
        const std::vector<uint8_t> rgb = scene::Render(image.scene, options.image_size);
        RETURN_IF_ERROR(WritePng(options.out_dir + "/" + image.path, rgb.data(),
                                 options.image_size, options.image_size));
      }
      maker.images().clear();
    }
    out.close();
    if (!out) {
      return absl::PermissionDeniedError(absl::StrCat("synthetic: cannot write ", manifest));
    }
    LOG(INFO) << "synthetic: wrote " << split.count << " " << split.name << " samples to "
              << manifest;
  }
  RETURN_IF_ERROR(Tokenizer::Train(corpus, options.out_dir + "/tokenizer", options.vocab_size,
                                   options.seed));
  LOG(INFO) << "synthetic: trained " << options.out_dir << "/tokenizer.model (vocab "
            << options.vocab_size << ") in " << timer.Seconds() << " s total";
  return absl::OkStatus();
}

}  // namespace ut::data

// Synthetic scenes: 1-3 coloured shapes on a 3 x 3 grid, their rendering,
// canonical captions, and the semantic "bags" that teacher features are
// computed from (docs/data_format.md, "Teacher features").
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/base/rng.h"

namespace ut::data::scene {

inline constexpr int kGrid = 3;  // cells per side; cell = row * kGrid + col
inline constexpr int kNumCells = kGrid * kGrid;
inline constexpr int kNumColors = 5;  // red green blue yellow purple
inline constexpr int kNumShapes = 3;  // circle square triangle
inline constexpr int kMaxObjects = 3;

const char* ColorName(int color);
const char* ShapeName(int shape);

struct Object {
  int color = 0;
  int shape = 0;
  bool small = false;
  int cell = 0;                    // 0..8, row-major
  int jitter_x = 0, jitter_y = 0;  // pixel offset of the centre, in [-1, 1]
};

// Objects sorted by cell (reading order: rows top to bottom, then left to
// right). (color, shape) pairs are unique, so "the red circle" names one
// object.
struct Scene {
  std::vector<Object> objects;
};

// A scene of `num_objects` (1..3) random objects in distinct cells.
Scene RandomScene(Rng& rng, int num_objects);
// Adds one random object (unique color+shape, free cell); false if full.
bool AddRandomObject(Rng& rng, Scene* scene);
// Restores the reading order after objects moved.
void SortObjects(Scene* scene);
bool CellFree(const Scene& scene, int cell);
bool HasColorShape(const Scene& scene, int color, int shape);

// [size, size, 3] RGB bytes (HWC): background plus filled shapes.
std::vector<uint8_t> Render(const Scene& scene, int size);

// "a small red circle" / "the red circle".
std::string Phrase(const Object& object);
std::string Name(const Object& object);
// Canonical caption: objects in reading order joined by the relation of each
// to the next ("left of" in the same row, else "above"), e.g.
// "a red circle left of a small blue square above a green triangle".
std::string Caption(const Scene& scene);

// A weighted bag of named semantic features.
struct Feature {
  std::string key;
  float weight = 1.0f;
};
using Bag = std::vector<Feature>;

// What a scene means: each object (color+shape, color, shape, size), the
// object count, and the caption's relations between consecutive objects.
Bag SceneBag(const Scene& scene);
// Where things are (cells): only the image modality sees exact positions.
Bag LayoutBag(const Scene& scene);
void Append(const Bag& from, float scale, Bag* to);

// Seeded random projection of a bag into `space` ("image", "text",
// "cross"): sum of weight * g(space, key), g a fixed Gaussian vector per
// (seed, space, key); L2-normalised. Same inputs give the same floats.
std::vector<float> Embed(const Bag& bag, const std::string& space, uint64_t seed, int dim);

}  // namespace ut::data::scene

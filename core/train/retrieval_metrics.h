// Retrieval and Winoground metrics as pure functions of similarity scores
// (docs/evaluation.md). No model, no data: every function here can be checked
// by hand.
//
// Ties count against the query: a candidate that is not relevant but scores
// the same as the best relevant one ranks ahead of it. A model that gives every
// candidate the same score therefore gets R@k = 0 (not 100%), and Winoground
// comparisons are strict (equal similarities fail).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ut::train {

// sim [Q,N] row-major = a [Q,R] @ b [N,R]^T. With L2-normalised rows this is
// the cosine similarity.
std::vector<float> InnerProducts(const std::vector<float>& a, int Q, const std::vector<float>& b,
                                 int N, int R);

// sim [Q,N]; relevant[q] lists the candidates (in [0,N)) that count as a hit
// for query q (at least one per query). Returns, per query, the 0-based rank of
// its best relevant candidate: the number of non-relevant candidates scoring
// >= that candidate's score.
std::vector<int> BestRelevantRanks(const std::vector<float>& sim, int Q, int N,
                                   const std::vector<std::vector<int>>& relevant);

// Fraction of queries whose best relevant rank is < k (0 when ranks is empty).
double RecallAtK(const std::vector<int>& ranks, int k);

// One Winoground example: captions c0, c1 and images i0, i1, where c0 is true
// of i0 and c1 of i1. s[c][i] = similarity of caption c and image i.
//   text  : each image prefers its own caption   s00 > s10 and s11 > s01
//   image : each caption prefers its own image   s00 > s01 and s11 > s10
//   group : both
struct WinogroundOutcome {
  bool text = false;
  bool image = false;
  bool group = false;
};
WinogroundOutcome Winoground(float s00, float s01, float s10, float s11);

// An image's similarity to its true caption beats every hard negative
// (strictly). True when there are no negatives.
bool PrefersTrueCaption(float s_true, const std::vector<float>& s_negatives);

// Whether a hard negative uses exactly the caption's words (as a multiset,
// split on spaces) in another order: an order or attribute-binding swap
// ("a red circle left of a blue square" -> "a blue square left of a red
// circle", "a blue circle left of a red square"), which a bag of words cannot
// tell apart. False for a negative that changes, adds or drops a word.
bool SameWordsReordered(const std::string& caption, const std::string& negative);

}  // namespace ut::train

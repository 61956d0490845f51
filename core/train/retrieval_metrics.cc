#include "core/train/retrieval_metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

#include "glog/logging.h"

namespace ut::train {

// a [Q,R], b [N,R] -> sim [Q,N]; sums in double so the result does not depend
// on summation order details.
std::vector<float> InnerProducts(const std::vector<float>& a, int Q, const std::vector<float>& b,
                                 int N, int R) {
  CHECK_EQ(a.size(), static_cast<size_t>(Q) * R);
  CHECK_EQ(b.size(), static_cast<size_t>(N) * R);
  std::vector<float> sim(static_cast<size_t>(Q) * N);
  for (int q = 0; q < Q; ++q) {
    const float* x = a.data() + static_cast<size_t>(q) * R;
    for (int n = 0; n < N; ++n) {
      const float* y = b.data() + static_cast<size_t>(n) * R;
      double dot = 0;
      for (int r = 0; r < R; ++r) dot += static_cast<double>(x[r]) * y[r];
      sim[static_cast<size_t>(q) * N + n] = static_cast<float>(dot);
    }
  }
  return sim;
}

// sim [Q,N] -> rank [Q] of the best relevant candidate (ties and NaN pessimistic).
std::vector<int> BestRelevantRanks(const std::vector<float>& sim, int Q, int N,
                                   const std::vector<std::vector<int>>& relevant) {
  CHECK_EQ(sim.size(), static_cast<size_t>(Q) * N);
  CHECK_EQ(relevant.size(), static_cast<size_t>(Q));
  std::vector<int> ranks(Q);
  std::vector<char> is_relevant(N);
  for (int q = 0; q < Q; ++q) {
    CHECK(!relevant[q].empty()) << "query " << q << " has no relevant candidate";
    const float* row = sim.data() + static_cast<size_t>(q) * N;
    std::fill(is_relevant.begin(), is_relevant.end(), 0);
    float best = -std::numeric_limits<float>::infinity();
    for (int n : relevant[q]) {
      CHECK(n >= 0 && n < N) << "relevant candidate " << n << " out of [0," << N << ")";
      is_relevant[n] = 1;
      if (row[n] > best) best = row[n];  // NaN never becomes the best
    }
    // A NaN score never helps: a non-relevant NaN ranks ahead.
    int rank = 0;
    for (int n = 0; n < N; ++n) rank += !is_relevant[n] && (std::isnan(row[n]) || row[n] >= best);
    ranks[q] = rank;
  }
  return ranks;
}

double RecallAtK(const std::vector<int>& ranks, int k) {
  if (ranks.empty()) return 0.0;
  int hits = 0;
  for (int r : ranks) hits += r < k;
  return static_cast<double>(hits) / ranks.size();
}

WinogroundOutcome Winoground(float s00, float s01, float s10, float s11) {
  WinogroundOutcome o;
  o.text = s00 > s10 && s11 > s01;
  o.image = s00 > s01 && s11 > s10;
  o.group = o.text && o.image;
  return o;
}

bool PrefersTrueCaption(float s_true, const std::vector<float>& s_negatives) {
  for (float s : s_negatives) {
    if (!(s_true > s)) return false;
  }
  return true;
}

namespace {

std::vector<std::string> SortedWords(const std::string& text) {
  std::vector<std::string> words;
  std::istringstream in(text);
  for (std::string w; in >> w;) words.push_back(w);
  std::sort(words.begin(), words.end());
  return words;
}

}  // namespace

bool SameWordsReordered(const std::string& caption, const std::string& negative) {
  return caption != negative && SortedWords(caption) == SortedWords(negative);
}

}  // namespace ut::train

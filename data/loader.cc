// The micro-batch loader (loader.h): epoch plans, row building, prefetch.
#include "data/loader.h"

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <mutex>
#include <numeric>
#include <set>
#include <thread>

#include "core/base/rng.h"
#include "data/image.h"
#include "glog/logging.h"

namespace ut::data {
namespace {

using BadImagePolicy = unified_train::DataConfig::BadImagePolicy;

std::string Dirname(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "" : path.substr(0, slash);
}

std::string Resolve(const std::string& dir, const std::string& rel) {
  if (rel.empty() || rel[0] == '/' || dir.empty()) return rel;
  return dir + "/" + rel;
}

// A sample with its text already tokenized.
struct Prepared {
  const Sample* sample = nullptr;
  std::vector<std::vector<int32_t>> text_tokens;  // per slice; empty for images
  int length = 0;  // bos + slices + eos, before truncation
};

// A built batch plus the ids of samples dropped for unreadable images (SKIP).
struct Built {
  absl::StatusOr<Batch> batch;
  std::vector<std::string> dropped;
};

}  // namespace

struct Loader::Impl {
  LoaderOptions options;
  const Tokenizer* tokenizer = nullptr;
  std::string manifest_dir;
  std::vector<Sample> samples;     // the whole split (every rank), manifest order
  std::vector<Prepared> prepared;  // parallel to samples
  int64_t batches_per_epoch = 0;   // of the single-process (global) stream
  int64_t create_skipped = 0;      // dropped by Create (unreadable image header)

  // Epoch plan cache: batches of indices into `samples`.
  std::mutex plan_mu;
  int64_t plan_epoch = -1;
  std::vector<std::vector<int>> plan;

  // Consumer state, prefetch queue and counters (all under mu). Positions
  // here are local: k = how many of this rank's micro-batches come before.
  std::mutex mu;
  std::condition_variable cv;
  int64_t consume_k = 0, produce_k = 0;
  uint64_t generation = 0;  // bumped by Seek; stale results are discarded
  struct Ready {
    int64_t k;
    Built built;
  };
  std::deque<Ready> ready;
  int in_flight = 0;
  bool stop = false;
  int64_t truncated = 0;
  std::set<std::string> skipped_ids;  // dropped while building batches
  std::thread worker;

  Prepared Prepare(const Sample& s) const;
  Built Build(const std::vector<const Prepared*>& rows, bool add_eos) const;
  Built BuildAt(int64_t k);
  // Global stream position of flat micro-batch number `flat` (epoch-major).
  Position GlobalPosition(int64_t flat) const {
    return Position{flat / batches_per_epoch, flat % batches_per_epoch};
  }
  // This rank's k-th micro-batch is global micro-batch k * dp_size + dp_rank.
  int64_t GlobalIndexOf(int64_t k) const { return k * options.dp_size + options.dp_rank; }
  void WorkerLoop();
};

Prepared Loader::Impl::Prepare(const Sample& s) const {
  Prepared p;
  p.sample = &s;
  p.length = 2;  // bos, eos
  for (const Slice& slice : s.slices) {
    if (slice.kind == Slice::Kind::kImage) {
      p.text_tokens.emplace_back();
      p.length += options.visual_tokens;
    } else {
      p.text_tokens.push_back(tokenizer->Encode(slice.text));
      p.length += static_cast<int>(p.text_tokens.back().size());
    }
  }
  return p;
}

// One row per sample: bos, slices (image -> visual_tokens x image_id), eos;
// cut to seq_len without splitting an image; padded to the longest row.
Built Loader::Impl::Build(const std::vector<const Prepared*>& rows, bool add_eos) const {
  const int S = options.image_size, V = options.visual_tokens;
  const size_t image_floats = 3 * static_cast<size_t>(S) * S;
  Built out;
  Batch batch;
  batch.image_size = S;
  struct Row {
    std::vector<int32_t> tokens, targets;
  };
  std::vector<Row> built_rows;
  for (const Prepared* p : rows) {
    const Sample& s = *p->sample;
    // Decode this sample's images first: a bad one drops the whole sample.
    std::vector<std::vector<float>> pixels;
    bool bad = false;
    for (const Slice& slice : s.slices) {
      if (slice.kind != Slice::Kind::kImage) continue;
      auto image = LoadImageCHW(Resolve(manifest_dir, slice.image_path), S);
      if (!image.ok()) {
        if (options.on_bad_image == unified_train::DataConfig::FAIL) {
          out.batch = absl::DataLossError(absl::StrCat(
              "sample \"", s.id, "\" (", options.manifest, "): ", image.status().message(),
              "; fix or remove the file, or set data.on_bad_image=SKIP to drop such samples"));
          return out;
        }
        out.dropped.push_back(s.id);
        bad = true;
        break;
      }
      pixels.push_back(std::move(*image));
    }
    if (bad) continue;

    const int row = static_cast<int>(built_rows.size());
    std::vector<int32_t> tokens = {tokenizer->bos_id()};
    std::vector<bool> is_target = {false};  // token may be predicted
    struct Span {
      int start, end, slice;
    };
    std::vector<Span> spans;
    for (int k = 0; k < static_cast<int>(s.slices.size()); ++k) {
      const Slice& slice = s.slices[k];
      const int start = static_cast<int>(tokens.size());
      if (slice.kind == Slice::Kind::kImage) {
        tokens.insert(tokens.end(), V, tokenizer->image_id());
        is_target.insert(is_target.end(), V, false);
      } else {
        const auto& ids = p->text_tokens[k];
        tokens.insert(tokens.end(), ids.begin(), ids.end());
        is_target.insert(is_target.end(), ids.size(), !slice.prompt);
      }
      spans.push_back({start, static_cast<int>(tokens.size()), k});
    }
    if (add_eos) {
      tokens.push_back(tokenizer->eos_id());
      is_target.push_back(true);
    }
    // Truncate; an image crossing the cut is dropped whole.
    int cut = static_cast<int>(tokens.size());
    if (cut > options.seq_len) {
      cut = options.seq_len;
      for (const Span& sp : spans) {
        if (s.slices[sp.slice].kind == Slice::Kind::kImage && sp.start < cut && sp.end > cut) {
          cut = sp.start;
        }
      }
      ++batch.truncated;
    }
    tokens.resize(cut);
    Row r;
    r.targets.assign(cut, -1);
    for (int t = 0; t + 1 < cut; ++t) {
      if (is_target[t + 1]) r.targets[t] = tokens[t + 1];
    }
    r.tokens = std::move(tokens);
    int image_index = 0;
    for (const Span& sp : spans) {
      const Slice& slice = s.slices[sp.slice];
      const bool is_image = slice.kind == Slice::Kind::kImage;
      const int end = std::min(sp.end, cut);
      if (is_image && sp.end <= cut) {
        batch.images.insert(batch.images.end(), pixels[image_index].begin(),
                            pixels[image_index].end());
        batch.image_row.push_back(row);
        batch.image_start.push_back(sp.start);
      }
      image_index += is_image;
      if (sp.start >= end) continue;  // cut away, or a text with no tokens
      SliceSpan span;
      span.row = row;
      span.start = sp.start;
      span.end = end;
      span.is_image = is_image;
      span.sample = row;
      span.teacher = slice.teacher;
      span.teacher_split = slice.teacher_split;
      batch.slices.push_back(std::move(span));
    }
    batch.sample_ids.push_back(s.id);
    built_rows.push_back(std::move(r));
  }
  batch.B = static_cast<int>(built_rows.size());
  for (const Row& r : built_rows) batch.T = std::max<int>(batch.T, r.tokens.size());
  batch.tokens.assign(static_cast<size_t>(batch.B) * batch.T, tokenizer->pad_id());
  batch.targets.assign(static_cast<size_t>(batch.B) * batch.T, -1);
  for (int b = 0; b < batch.B; ++b) {
    const Row& r = built_rows[b];
    std::copy(r.tokens.begin(), r.tokens.end(), batch.tokens.begin() + b * batch.T);
    std::copy(r.targets.begin(), r.targets.end(), batch.targets.begin() + b * batch.T);
    batch.lens.push_back(static_cast<int32_t>(r.tokens.size()));
  }
  batch.num_images = static_cast<int>(batch.image_row.size());
  CHECK_EQ(batch.images.size(), batch.num_images * image_floats);
  out.batch = std::move(batch);
  return out;
}

// Epoch plan (of the whole split, identical on every rank): shuffle (seed,
// epoch), sort by length within windows of 64 * micro_batch_size, cut into
// micro-batches, shuffle batch order within each window; the incomplete last
// batch is dropped. This rank's k-th micro-batch is the plan's entry for
// global micro-batch k * dp_size + dp_rank; only that one is built (decoded).
Built Loader::Impl::BuildAt(int64_t k) {
  const Position pos = GlobalPosition(GlobalIndexOf(k));
  std::vector<const Prepared*> rows;
  {
    std::lock_guard<std::mutex> lock(plan_mu);
    if (plan_epoch != pos.epoch) {
      const int n = static_cast<int>(samples.size());
      const int mbs = options.micro_batch_size;
      std::vector<int> order(n);
      std::iota(order.begin(), order.end(), 0);
      Rng rng(Rng(options.seed ^ (0x9e3779b97f4a7c15ULL * (pos.epoch + 1))).NextU64());
      for (int i = n - 1; i > 0; --i) std::swap(order[i], order[rng.Below(i + 1)]);
      plan.clear();
      const int window = 64 * mbs;
      for (int w = 0; w < n; w += window) {
        const auto first = order.begin() + w, last = order.begin() + std::min(n, w + window);
        std::stable_sort(first, last,
                         [&](int a, int b) { return prepared[a].length < prepared[b].length; });
        std::vector<std::vector<int>> local;
        for (auto it = first; last - it >= mbs; it += mbs) local.emplace_back(it, it + mbs);
        for (size_t i = local.size(); i > 1; --i) std::swap(local[i - 1], local[rng.Below(i)]);
        for (auto& b : local) plan.push_back(std::move(b));
      }
      CHECK_EQ(static_cast<int64_t>(plan.size()), batches_per_epoch);
      plan_epoch = pos.epoch;
    }
    for (int i : plan[pos.index]) rows.push_back(&prepared[i]);
  }
  return Build(rows, /*add_eos=*/true);
}

void Loader::Impl::WorkerLoop() {
  std::unique_lock<std::mutex> lock(mu);
  while (true) {
    cv.wait(lock, [&] {
      return stop || static_cast<int>(ready.size()) + in_flight < options.prefetch;
    });
    if (stop) return;
    const int64_t k = produce_k++;
    const uint64_t gen = generation;
    ++in_flight;
    lock.unlock();
    Built built = BuildAt(k);
    lock.lock();
    --in_flight;
    if (gen == generation) ready.push_back({k, std::move(built)});
    cv.notify_all();
  }
}

Loader::Loader() : impl_(std::make_unique<Impl>()) {}

Loader::~Loader() {
  if (impl_->worker.joinable()) {
    {
      std::lock_guard<std::mutex> lock(impl_->mu);
      impl_->stop = true;
    }
    impl_->cv.notify_all();
    impl_->worker.join();
  }
}

LoaderOptions LoaderOptionsFromConfig(const Config& config, const std::string& split,
                                      int dp_rank, int dp_size) {
  const auto& d = config.data();
  const auto& v = config.model().vision();
  LoaderOptions o;
  o.manifest = (std::filesystem::path(d.data_dir()) / (split + ".jsonl")).string();
  o.seq_len = d.seq_len();
  o.micro_batch_size = d.micro_batch_size();
  o.image_size = v.image_size();
  const int side = v.patch_size() > 0 ? v.image_size() / v.patch_size() : 0;
  o.visual_tokens = side * side;
  o.seed = d.seed();
  o.on_bad_image = d.on_bad_image();
  o.prefetch = d.prefetch();
  o.dp_rank = dp_rank;
  o.dp_size = dp_size;
  return o;
}

absl::StatusOr<std::unique_ptr<Loader>> Loader::Create(const LoaderOptions& options,
                                                       const Tokenizer* tokenizer) {
  auto bad = [&](const std::string& field, const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat("loader for ", options.manifest, ": ", field,
                                                   " ", what));
  };
  if (tokenizer == nullptr) return bad("tokenizer", "is null; load one with Tokenizer::Load");
  if (options.seq_len < 2) return bad("seq_len", absl::StrCat("must be >= 2, got ", options.seq_len));
  if (options.micro_batch_size < 1) {
    return bad("micro_batch_size", absl::StrCat("must be >= 1, got ", options.micro_batch_size));
  }
  if (options.image_size < 1 || options.visual_tokens < 1) {
    return bad("image_size/visual_tokens", "must be >= 1");
  }
  if (options.prefetch < 0) return bad("prefetch", "must be >= 0");
  if (options.dp_size < 1 || options.dp_rank < 0 || options.dp_rank >= options.dp_size) {
    return bad("dp_rank/dp_size", absl::StrCat("need 0 <= dp_rank < dp_size, got ",
                                               options.dp_rank, "/", options.dp_size));
  }
  ASSIGN_OR_RETURN(std::vector<Sample> all, ReadManifest(options.manifest));

  std::unique_ptr<Loader> loader(new Loader());
  Impl& m = *loader->impl_;
  m.options = options;
  m.tokenizer = tokenizer;
  m.manifest_dir = Dirname(options.manifest);
  // Every rank checks every sample so that all ranks agree on the plan.
  std::vector<Sample> valid;
  for (Sample& s : all) {
    absl::Status status;
    for (const Slice& slice : s.slices) {
      if (slice.kind == Slice::Kind::kImage) {
        status = CheckImageHeader(Resolve(m.manifest_dir, slice.image_path));
        if (!status.ok()) break;
      }
    }
    if (status.ok()) {
      valid.push_back(std::move(s));
    } else if (options.on_bad_image == unified_train::DataConfig::FAIL) {
      return absl::DataLossError(absl::StrCat(
          "sample \"", s.id, "\" (", options.manifest, "): ", status.message(),
          "; fix or remove the file, or set data.on_bad_image=SKIP to drop such samples"));
    } else {
      if (m.create_skipped < 5) LOG(WARNING) << "skipping sample " << s.id << ": " << status;
      ++m.create_skipped;
    }
  }
  if (m.create_skipped > 0) {
    LOG(WARNING) << options.manifest << ": skipped " << m.create_skipped
                 << " samples with unreadable images";
  }
  // No sample-level sharding: every rank plans the whole split and takes
  // every dp_size-th micro-batch of it (see BuildAt).
  m.samples = std::move(valid);
  const int64_t n = static_cast<int64_t>(m.samples.size());
  m.batches_per_epoch = n / options.micro_batch_size;
  if (m.batches_per_epoch == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        options.manifest, ": only ", n, " usable samples, fewer than micro_batch_size ",
        options.micro_batch_size, "; use more data or a smaller micro batch"));
  }
  m.prepared.reserve(m.samples.size());
  for (const Sample& s : m.samples) m.prepared.push_back(m.Prepare(s));
  if (options.prefetch > 0) m.worker = std::thread([&m] { m.WorkerLoop(); });
  return loader;
}

absl::StatusOr<Batch> Loader::Next() {
  Impl& m = *impl_;
  while (true) {
    Built built;
    if (m.options.prefetch == 0) {
      int64_t k;
      {
        std::lock_guard<std::mutex> lock(m.mu);
        k = m.consume_k;
      }
      built = m.BuildAt(k);
    } else {
      std::unique_lock<std::mutex> lock(m.mu);
      m.cv.wait(lock, [&] { return !m.ready.empty(); });
      CHECK_EQ(m.ready.front().k, m.consume_k);
      built = std::move(m.ready.front().built);
      m.ready.pop_front();
      m.cv.notify_all();
    }
    if (!built.batch.ok()) {
      Seek(position());  // a retry rebuilds the same batch
      return built.batch.status();
    }
    {
      std::lock_guard<std::mutex> lock(m.mu);
      ++m.consume_k;
      m.truncated += built.batch->truncated;
      m.skipped_ids.insert(built.dropped.begin(), built.dropped.end());
    }
    if (built.batch->B > 0) return std::move(built.batch);
    // Every sample of this micro-batch was dropped (SKIP): take the next one.
  }
}

Position Loader::position() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->GlobalPosition(impl_->consume_k * impl_->options.dp_size);
}

void Loader::Seek(const Position& p) {
  Impl& m = *impl_;
  CHECK(p.epoch >= 0 && p.index >= 0) << "Seek to a negative position";
  const int64_t flat = p.epoch * m.batches_per_epoch + p.index;
  const int dp = m.options.dp_size;
  if (flat % dp != 0) {
    LOG(WARNING) << "loader " << m.options.manifest << " (dp rank " << m.options.dp_rank << "/"
                 << dp << "): position " << p.epoch << ":" << p.index << " (global micro-batch "
                 << flat << ") is not a multiple of dp_size; resuming from the round start "
                 << (flat / dp) * dp << " (was the checkpoint written with another data-parallel "
                 << "size?)";
  }
  std::lock_guard<std::mutex> lock(m.mu);
  ++m.generation;
  m.ready.clear();
  m.consume_k = m.produce_k = flat / dp;
  m.cv.notify_all();
}

int64_t Loader::num_samples() const { return static_cast<int64_t>(impl_->samples.size()); }
int64_t Loader::batches_per_epoch() const { return impl_->batches_per_epoch; }

int64_t Loader::skipped_images() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->create_skipped + static_cast<int64_t>(impl_->skipped_ids.size());
}

int64_t Loader::truncated() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->truncated;
}

const std::vector<Sample>& Loader::samples() const { return impl_->samples; }

absl::StatusOr<Batch> Loader::MakeBatch(const std::vector<const Sample*>& samples, bool add_eos) {
  std::vector<Prepared> prepared;
  prepared.reserve(samples.size());
  for (const Sample* s : samples) prepared.push_back(impl_->Prepare(*s));
  std::vector<const Prepared*> rows;
  for (const Prepared& p : prepared) rows.push_back(&p);
  Built built = impl_->Build(rows, add_eos);
  return std::move(built.batch);
}

}  // namespace ut::data

#include "parallel/comm/mpi_test_main.h"

#include <mpi.h>

#include <cstdio>
#include <memory>
#include <string>

#include "core/base/logging.h"
#include "gtest/gtest.h"

namespace ut::comm::testing {
namespace {

std::unique_ptr<MpiRuntime> g_runtime;
std::unique_ptr<Communicator> g_world;

// Failures of ranks other than 0 (whose report printer is removed).
class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  // (UnitTest::current_test_info() would deadlock inside OnTestPartResult.)
  void OnTestStart(const ::testing::TestInfo& info) override {
    test_ = std::string(info.test_suite_name()) + "." + info.name();
  }
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (!r.failed()) return;
    std::fprintf(stderr, "[rank %d] %s %s:%d: %s\n", rank_, test_.c_str(),
                 r.file_name() ? r.file_name() : "?", r.line_number(), r.summary());
  }

 private:
  int rank_;
  std::string test_;
};

}  // namespace

Communicator& World() { return *g_world; }
MpiRuntime& Runtime() { return *g_runtime; }

}  // namespace ut::comm::testing

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  namespace t = ut::comm::testing;
  auto runtime = ut::comm::MpiRuntime::Init(&argc, &argv);
  if (!runtime.ok()) {
    std::fprintf(stderr, "%s\n", std::string(runtime.status().message()).c_str());
    return 1;
  }
  t::g_runtime = std::move(*runtime);
  ut::comm::CommOptions options;
  options.timeout_s = 60;
  t::g_world = t::g_runtime->World(options);
  const int rank = t::g_world->rank();
  ut::InitLogging(argv[0], rank);
  if (rank != 0) {
    auto& listeners = testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new t::RankFailurePrinter(rank));
  }
  int rc = RUN_ALL_TESTS();
  int worst = rc;
  MPI_Allreduce(&rc, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  t::g_world.reset();
  t::g_runtime.reset();  // MPI_Finalize
  return worst;
}

#include "parallel/dp/mpi_test_main.h"

#include <mpi.h>

#include <cstdio>
#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "parallel/comm/mpi_communicator.h"

namespace ut::dp::testing {
namespace {

std::unique_ptr<comm::Communicator> g_world;

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

comm::Communicator& World() { return *g_world; }

}  // namespace ut::dp::testing

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  auto runtime = ut::comm::MpiRuntime::Init(&argc, &argv);
  if (!runtime.ok()) {
    std::fprintf(stderr, "%s\n", std::string(runtime.status().message()).c_str());
    return 1;
  }
  ut::comm::CommOptions options;
  options.timeout_s = 60;
  ut::dp::testing::g_world = (*runtime)->World(options);
  const int rank = ut::dp::testing::g_world->rank();
  if (rank != 0) {
    auto& listeners = testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new ut::dp::testing::RankFailurePrinter(rank));
  }
  int rc = RUN_ALL_TESTS();
  int worst = rc;
  MPI_Allreduce(&rc, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  ut::dp::testing::g_world.reset();
  runtime->reset();
  return worst;
}

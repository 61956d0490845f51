#include "parallel/comm/communicator.h"

namespace ut::comm {

size_t ElemSize(ElemType t) {
  switch (t) {
    case ElemType::kF32: return 4;
    case ElemType::kF64: return 8;
    case ElemType::kI32: return 4;
    case ElemType::kI64: return 8;
  }
  return 0;
}

}  // namespace ut::comm

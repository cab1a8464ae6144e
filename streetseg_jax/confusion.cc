// Confusion-matrix counts, one (K, K) matrix per row of int32 labels and predictions (metrics.py says what counts):
// a histogram of label * K + prediction, with every pixel that is not counted (an ignore or out-of-range label, an
// out-of-range prediction) sent to an extra bin. XLA:CPU's scatter-add (jnp.bincount) adds one pixel at a time
// through a generic loop; this keeps four histograms, so consecutive pixels of the same cell do not wait on each
// other's increment, and adds them at the end. Called through XLA's FFI (native.py).
#include <algorithm>
#include <cstdint>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace {

namespace ffi = xla::ffi;
using Ints = ffi::Buffer<ffi::S32>;

constexpr int kCopies = 4;
constexpr int64_t kMaxClasses = 46340;  // K * K cells stay below 2**31

ffi::Error Counts(Ints labels, Ints preds, int64_t num_classes, int64_t ignore_id, ffi::ResultBuffer<ffi::S32> out) {
  const auto dims = labels.dimensions();
  if (dims.size() == 0 || labels.element_count() != preds.element_count())
    return ffi::Error::InvalidArgument("confusion_counts: labels and predictions must have the same shape, rank >= 1");
  if (num_classes < 1 || num_classes > kMaxClasses)
    return ffi::Error::InvalidArgument("confusion_counts: num_classes must be in 1..46340");
  const int64_t pixels = dims.back();
  const int64_t rows = pixels ? static_cast<int64_t>(labels.element_count()) / pixels : 0;
  const uint32_t k = static_cast<uint32_t>(num_classes), cells = k * k, stride = cells + 1;
  // A label equal to ignore_id is not counted; one outside 0..K-1 is not counted either, whatever ignore_id is.
  const uint32_t ignore = ignore_id >= 0 && ignore_id < num_classes ? static_cast<uint32_t>(ignore_id) : k;
  std::vector<uint32_t> histograms(kCopies * stride);
  for (int64_t row = 0; row < rows; ++row) {
    std::fill(histograms.begin(), histograms.end(), 0);
    const int32_t* y = labels.typed_data() + row * pixels;
    const int32_t* p = preds.typed_data() + row * pixels;
    // Negative ids become large unsigned ones, so one comparison each tests both ends of the range.
    const auto cell_of = [=](int64_t i) {
      const uint32_t label = static_cast<uint32_t>(y[i]), pred = static_cast<uint32_t>(p[i]);
      return label < k && pred < k && label != ignore ? label * k + pred : cells;
    };
    int64_t i = 0;
    for (; i + kCopies <= pixels; i += kCopies) {
      uint32_t cell[kCopies];  // all read before any count is written: the compiler cannot know they do not alias
      for (int copy = 0; copy < kCopies; ++copy) cell[copy] = cell_of(i + copy);
      for (int copy = 0; copy < kCopies; ++copy) ++histograms[copy * stride + cell[copy]];
    }
    for (; i < pixels; ++i) ++histograms[cell_of(i)];
    int32_t* result = out->typed_data() + row * cells;
    for (uint32_t cell = 0; cell < cells; ++cell) {
      uint32_t total = 0;
      for (int copy = 0; copy < kCopies; ++copy) total += histograms[copy * stride + cell];
      result[cell] = static_cast<int32_t>(total);
    }
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(StreetsegConfusionCounts, Counts,
                              ffi::Ffi::Bind()
                                  .Arg<Ints>()
                                  .Arg<Ints>()
                                  .Attr<int64_t>("num_classes")
                                  .Attr<int64_t>("ignore_id")
                                  .Ret<ffi::Buffer<ffi::S32>>());

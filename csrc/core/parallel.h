#pragma once
// One pool for every CPU kernel. Its size follows torch.get_num_threads() (set from Python) or
// pynn.set_num_threads(). Idle workers block on a condition variable instead of spinning so that
// they never take cycles from torch's own OpenMP threads between our calls.
#include <cstdint>
#include <functional>

namespace pynn {

int get_num_threads();
void set_num_threads(int n);
bool in_parallel_region();

// Splits [begin, end) into at most get_num_threads() chunks of at least `grain` iterations and
// runs f(chunk_begin, chunk_end) on each, the caller taking a share. Nested calls, and calls made
// while another thread holds the pool, run serially. The first exception thrown by a chunk is
// rethrown in the caller once all chunks have finished.
void parallel_for(int64_t begin, int64_t end, int64_t grain,
                  const std::function<void(int64_t, int64_t)>& f);

}  // namespace pynn

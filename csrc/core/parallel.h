#pragma once
// Parallel regions for every CPU kernel, on the OpenMP runtime that torch uses too (or, built
// without OpenMP, on a pool of our own whose idle workers block on a condition variable). Their
// width follows torch.get_num_threads() (set from Python) or pynn.set_num_threads().
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>

namespace pynn {

int get_num_threads();
void set_num_threads(int n);
bool in_parallel_region();

// Splits [begin, end) into at most get_num_threads() chunks of at least `grain` iterations and
// runs f(chunk_begin, chunk_end) on each, the caller taking a share. Nested calls (inside one of
// our regions or an OpenMP region), and with our own pool calls made while another thread holds
// it, run serially. The first exception thrown by a chunk is
// rethrown in the caller once all chunks have finished.
void parallel_for(int64_t begin, int64_t end, int64_t grain,
                  const std::function<void(int64_t, int64_t)>& f);

// Runs items [0, n_items) on up to `slots` threads that take the next item from a shared
// counter; f(slot, item). For items that write disjoint outputs: a thread that starts late or is
// preempted (the machine may be shared) just takes fewer items, and nothing waits for it.
template <class F>
void for_each_item_dynamic(int64_t n_items, int64_t slots, F&& f) {
  slots = std::max<int64_t>(1, std::min(slots, n_items));
  std::atomic<int64_t> next{0};
  parallel_for(0, slots, 1, [&](int64_t s0, int64_t) {
    for (int64_t it = next.fetch_add(1); it < n_items; it = next.fetch_add(1)) f(s0, it);
  });
}

// Runs f(thread, nthreads) once on each of nthreads threads that all run at the same time, so
// that f may wait for the others at a SpinBarrier: one wake-up of the pool for a whole loop whose
// iterations need each other's results (an RNN time loop). nthreads is at most
// get_num_threads(); when the pool is busy or the call is nested, f(0, 1) runs alone, so f must
// split its work by the nthreads it is given. f must not throw (the others would wait forever
// at the barrier): allocate and check before the region.
void parallel_region(int nthreads, const std::function<void(int, int)>& f);

// The mean time, in nanoseconds, for a value to go from this thread to a new one and back through
// one cache line, over up to max_round_trips round trips or about 20 ms, whichever ends first.
// On a virtual machine the placement of its CPUs on the host can change while it runs: the
// benchmarks record this next to every case, because kernels whose threads exchange data at
// every step (an RNN time loop) slow down when it grows (55 ns against 350 ns on the machine
// this was written on).
double core_round_trip_ns(int64_t max_round_trips);

// A reusable barrier for the threads of one parallel_region. Waiters spin briefly (a time step
// is a few microseconds, far less than a futex round trip) and then yield, so a thread that
// the OS has descheduled on a busy machine is not starved by the spinning of the others.
// arrive() and wait(phase) split the barrier so that a thread can do work that the others do
// not need in between (the next step's input projection) instead of idling.
// The region's team may be smaller than asked for (OMP_THREAD_LIMIT, OMP_DYNAMIC), so the
// barrier is sized by the team: every thread calls join(nthreads) with the size its f was given
// before it first arrives. They all store the same value, so each thread's own store is the one
// its arrivals read, whatever the order in which the others join.
class SpinBarrier {
 public:
  void join(int n) { n_.store(n, std::memory_order_relaxed); }
  unsigned arrive();
  void wait(unsigned phase);
  void wait() { wait(arrive()); }

 private:
  std::atomic<int> n_{1};
  std::atomic<int> count_{0};
  std::atomic<unsigned> phase_{0};
};

}  // namespace pynn

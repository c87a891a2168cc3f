#include "core/parallel.h"

#include "core/error.h"

// Two implementations of one interface. Built with OpenMP (the default wherever the compiler
// has it), parallel work runs on the OpenMP runtime. pynn imports torch before its own module,
// and torch's CPU builds bring their libgomp under the soname libgomp.so.1, which is the
// soname this module asks for, so the loader hands both the same runtime and the same worker
// threads: pynn's regions and torch's then take turns on one team of workers instead of two
// pools competing for the cores. (With separate pools, libgomp's workers spin-wait after each
// torch op on the cores our workers need next: benchmarks/omp_spin.py measured +79% on a
// LeNet-sized convolution right after a 7 us torch op.) Without OpenMP, a pool of our own.

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace pynn {
namespace {

thread_local bool t_in_parallel = false;

// Marks the calling thread as inside one of our regions for its lifetime.
struct RegionScope {
  bool was = t_in_parallel;
  RegionScope() { t_in_parallel = true; }
  ~RegionScope() { t_in_parallel = was; }
};

}  // namespace

// ---- the backend: a team of threads that run at the same time ------------------------------
// run_team(n, fn) runs fn(thread, team_size) once on each thread of a team of at most n
// threads, all running at the same time, and returns true; or returns false, having run
// nothing, when no team can be formed now. nested() says that the caller is already inside a
// region, where work runs serially.

#ifdef _OPENMP
namespace {

std::atomic<int> g_num_threads{std::max(1, omp_get_max_threads())};

// Inside one of our regions, or inside anyone's OpenMP region (a torch op's).
bool nested() { return t_in_parallel || omp_in_parallel(); }

bool run_team(int n, const std::function<void(int, int)>& fn) {
  // The team may be smaller than asked for; fn splits its work by the size it is given.
#pragma omp parallel num_threads(n)
  {
    RegionScope scope;
    fn(omp_get_thread_num(), omp_get_num_threads());
  }
  return true;
}

}  // namespace

int get_num_threads() { return g_num_threads.load(std::memory_order_relaxed); }
void set_num_threads(int n) { g_num_threads.store(std::max(n, 1), std::memory_order_relaxed); }

#else  // no OpenMP: our own pool
namespace {

class ThreadPool {
 public:
  ~ThreadPool() { resize(0); }

  int size() const { return num_threads_; }

  void resize(int n) {
    n = std::max(n, 1);
    std::lock_guard<std::mutex> run_lock(run_mutex_);
    stop_workers();
    num_threads_ = n;
    // The caller is one of the n threads; n - 1 workers are started lazily on first use.
  }

  // Runs task(i) for i in [0, ntasks). Returns false (nothing run) when the pool is busy.
  bool run(int ntasks, const std::function<void(int)>& task) {
    std::unique_lock<std::mutex> run_lock(run_mutex_, std::try_to_lock);
    if (!run_lock.owns_lock()) return false;
    start_workers();
    uint64_t gen;
    {
      std::lock_guard<std::mutex> lk(mutex_);
      task_ = &task;
      ntasks_ = ntasks;
      next_ = 0;
      pending_ = ntasks;
      error_ = nullptr;
      gen = ++generation_;
    }
    cv_work_.notify_all();
    work_loop(gen);
    std::unique_lock<std::mutex> lk(mutex_);
    cv_done_.wait(lk, [&] { return pending_ == 0; });
    task_ = nullptr;
    if (error_) std::rethrow_exception(error_);
    return true;
  }

 private:
  // Claims tasks of generation `gen` until none are left. Claims happen under the lock so a
  // worker that wakes late can never take a task of a later generation by mistake.
  void work_loop(uint64_t gen) {
    bool was = t_in_parallel;
    t_in_parallel = true;
    for (;;) {
      int i;
      const std::function<void(int)>* task;
      {
        std::lock_guard<std::mutex> lk(mutex_);
        if (generation_ != gen || next_ >= ntasks_) break;
        i = next_++;
        task = task_;
      }
      try {
        (*task)(i);
      } catch (...) {
        std::lock_guard<std::mutex> lk(mutex_);
        if (!error_) error_ = std::current_exception();
      }
      std::lock_guard<std::mutex> lk(mutex_);
      if (--pending_ == 0) cv_done_.notify_all();
    }
    t_in_parallel = was;
  }

  void worker_main() {
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lk(mutex_);
        cv_work_.wait(lk, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
      }
      work_loop(seen);
    }
  }

  void start_workers() {
    if (!workers_.empty() || num_threads_ <= 1) return;
    stop_ = false;
    for (int i = 1; i < num_threads_; ++i) workers_.emplace_back([this] { worker_main(); });
  }

  void stop_workers() {
    {
      std::lock_guard<std::mutex> lk(mutex_);
      stop_ = true;
    }
    cv_work_.notify_all();
    for (auto& w : workers_) w.join();
    workers_.clear();
    stop_ = false;
  }

  int num_threads_ = std::max(1u, std::thread::hardware_concurrency());
  std::vector<std::thread> workers_;
  std::mutex run_mutex_;  // one parallel_for at a time owns the pool
  std::mutex mutex_;
  std::condition_variable cv_work_, cv_done_;
  const std::function<void(int)>* task_ = nullptr;
  int ntasks_ = 0;
  int next_ = 0;
  int pending_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
};

ThreadPool& pool() {
  static ThreadPool* p = new ThreadPool();  // leaked on purpose: no join at interpreter exit
  return *p;
}

bool nested() { return t_in_parallel; }

// Each pool thread (the caller included) claims one task at a time and only claims another once
// its task has returned, which a team member's task does only after every other member has
// passed all its barriers: so n <= pool size tasks always end up on n distinct threads.
bool run_team(int n, const std::function<void(int, int)>& fn) {
  return pool().run(n, [&](int i) { fn(i, n); });
}

}  // namespace

int get_num_threads() { return pool().size(); }
void set_num_threads(int n) { pool().resize(n); }

#endif  // _OPENMP

// ---- the interface, on either backend -------------------------------------------------------

bool in_parallel_region() { return t_in_parallel; }

void parallel_for(int64_t begin, int64_t end, int64_t grain,
                  const std::function<void(int64_t, int64_t)>& f) {
  if (end <= begin) return;
  const int64_t n = end - begin;
  grain = std::max<int64_t>(grain, 1);
  const int64_t chunks = std::min<int64_t>((n + grain - 1) / grain, get_num_threads());
  if (chunks <= 1 || nested()) {
    f(begin, end);
    return;
  }
  const int64_t step = (n + chunks - 1) / chunks;
  std::atomic<int64_t> next{0};
  std::exception_ptr error;
  std::atomic<bool> failed{false};
  // Chunks are claimed, not assigned: a team smaller than asked for, or a thread the OS runs
  // late, still covers every chunk.
  const bool ran = run_team(static_cast<int>(chunks), [&](int, int) {
    for (int64_t i; (i = next.fetch_add(1, std::memory_order_relaxed)) < chunks;) {
      const int64_t b = begin + i * step, e = std::min(end, b + step);
      if (b >= e) continue;
      try {
        f(b, e);
      } catch (...) {
        if (!failed.exchange(true)) error = std::current_exception();
      }
    }
  });
  if (!ran) f(begin, end);
  if (error) std::rethrow_exception(error);
}

void parallel_region(int nthreads, const std::function<void(int, int)>& f) {
  nthreads = std::min(nthreads, get_num_threads());
  if (nthreads <= 1 || nested() || !run_team(nthreads, f)) f(0, 1);
}

double core_round_trip_ns(int64_t max_round_trips) {
  PYNN_CHECK(max_round_trips >= 1, "core_round_trip_ns: max_round_trips must be >= 1, got ",
             max_round_trips);
  using Clock = std::chrono::steady_clock;
  // even: the partner's turn to answer (it writes n + 1); odd: ours; -1: stop
  alignas(64) std::atomic<int64_t> line{0};
  auto wait_for = [&](int64_t want) {
    for (int spins = 0; line.load(std::memory_order_acquire) != want; ++spins)
      if (spins > 4000) std::this_thread::yield();  // a single CPU: let the partner run
  };
  std::thread partner([&] {
    for (int64_t v = 0;; v += 2) {
      int64_t now;
      for (int spins = 0; (now = line.load(std::memory_order_acquire)) != v && now >= 0; ++spins)
        if (spins > 4000) std::this_thread::yield();
      if (now < 0) return;
      line.store(v + 1, std::memory_order_release);
    }
  });
  wait_for(1);  // the partner runs: its start-up is not a round trip
  const auto start = Clock::now();
  const auto limit = start + std::chrono::milliseconds(20);
  int64_t done = 0;
  while (done < max_round_trips) {
    line.store(2 * done + 2, std::memory_order_release);
    wait_for(2 * done + 3);
    ++done;
    if ((done & 255) == 0 && Clock::now() > limit) break;
  }
  const auto end = Clock::now();
  line.store(-1, std::memory_order_release);
  partner.join();
  return std::chrono::duration<double, std::nano>(end - start).count() / static_cast<double>(done);
}

unsigned SpinBarrier::arrive() {
  const unsigned phase = phase_.load(std::memory_order_relaxed);
  if (count_.fetch_add(1, std::memory_order_acq_rel) + 1 == n_.load(std::memory_order_relaxed)) {
    count_.store(0, std::memory_order_relaxed);
    phase_.store(phase + 1, std::memory_order_release);
  }
  return phase;
}

void SpinBarrier::wait(unsigned phase) {
  for (int spins = 0; phase_.load(std::memory_order_acquire) == phase; ++spins) {
    if (spins < 4000) {
#if defined(__x86_64__) || defined(_M_X64)
      _mm_pause();
#endif
    } else {
      std::this_thread::yield();
    }
  }
}

}  // namespace pynn

# Convenience wrapper around CMake. `make run`: build and run the lab on
# built-in defaults; `make test`: build and run every test.
BUILD ?= build
JOBS  ?= $(shell nproc)
CMAKE_FLAGS ?=

SHARED_TRACES ?= ../shared/traces

.PHONY: all build run test bench bench-general bench-pools bench-heaps bench-lab bench-engines clean

all: build

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS)

build: $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

run: build
	./$(BUILD)/heapkit lab --out $(BUILD)/lab

test: build
	scripts/run-tests.sh $(BUILD)

# Every benchmark: the general allocator against glibc, mimalloc, jemalloc
# and tcmalloc; pools, slabs and arenas against malloc; the classic engines
# on the shared malloc-lab traces (when that folder exists).
bench: bench-general bench-pools bench-heaps bench-lab bench-engines

bench-general: build
	bench/run.sh --svg $(BUILD)/bench-general.svg $(BUILD)

bench-pools: build
	bench/pools/run.sh $(BUILD)

bench-heaps: build
	bench/heapdestroy/run.sh $(BUILD)

bench-lab: build
	@if [ -d "$(SHARED_TRACES)" ]; then \
	  ./$(BUILD)/heapkit replay --svg $(BUILD)/lab-shared $(SHARED_TRACES)/*.rep; \
	else echo "bench-lab: $(SHARED_TRACES) not found; skipped"; fi

clean:
	rm -rf $(BUILD)

bench-engines: build
	./$(BUILD)/bench_engine_latency

# llm.c-style short targets over the CMake build (build/). Binaries land in the repository root.
#   make                 all CPU binaries
#   make train_stapo_cpu the CPU trainer
#   make train_stapo     the CUDA trainer (needs nvcc; a GPU only to run it)
#   make test            build everything (CPU and, with nvcc, CUDA), then ctest (GPU tests report Skipped without a
#                        GPU; `cd build && ctest -L gpu` runs only them)
#   make demo            the stability demo on a tiny Llama (dev/demo.sh): on the GPU when nvidia-smi lists one and
#                        nvcc is there, else on the CPU (DEVICE=cpu|gpu chooses); table + plot in out/demo/
#   make study           the stability study of docs/stability.md, CPU (dev/study.sh): out/study/study.md (+ extra/)
#   make deps            install the Debian packages this project needs (as root)
#   make clean           remove the build folder and the two trainers
BUILD ?= build
CMAKE_ARGS ?=
JOBS ?= $(shell nproc)

.PHONY: all configure deps check-deps test clean train_stapo_cpu train_stapo demo study

all: configure
	cmake --build $(BUILD) -j $(JOBS) --target stapo_cpu_binaries

check-deps:
	@bash dev/deps.sh --check-or-install

deps:
	@bash dev/deps.sh --install

# Re-running cmake is cheap and picks up targets added since the last configure.
configure: check-deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_ARGS) > $(BUILD).configure.log 2>&1 \
	  || { cat $(BUILD).configure.log; exit 1; }

train_stapo_cpu train_stapo: configure
	cmake --build $(BUILD) -j $(JOBS) --target $@

test: configure
	cmake --build $(BUILD) -j $(JOBS)
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

demo:
	BUILD=$(BUILD) bash dev/demo.sh

study:
	BUILD=$(BUILD) bash dev/study.sh

clean:
	rm -rf $(BUILD) $(BUILD).configure.log
	rm -f train_stapo_cpu train_stapo

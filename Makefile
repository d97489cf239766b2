# The two set-up commands in README.md are `make demo` and `make test`.
.PHONY: demo test deps lint bench fuzz
FUZZ_SECONDS ?= 60

demo:
	bash scripts/demo.sh

deps:
	bash scripts/install-test-deps.sh

test: deps
	cargo build --workspace --all-targets
	cargo test --workspace --no-fail-fast

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

# The benchmarks run the release binary and LiteLLM (the gateway's peer), which
# install-bench-deps.sh installs; it is kept out of `deps` because no test needs it.
bench:
	bash scripts/install-bench-deps.sh
	cargo build --release -p corral
	cargo bench --workspace

fuzz:
	bash scripts/fuzz.sh $(FUZZ_SECONDS)

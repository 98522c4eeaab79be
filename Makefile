# The whole set-up on a fresh machine is `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: demo test bench proto clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall when the dependencies change. torch is pinned in constraints.txt.
$(VENV)/.installed-all: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) -e '.[all]'
	@touch $@

$(VENV)/.installed-dev: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) -e '.[dev]'
	@touch $@ $(VENV)/.installed-all

demo: $(VENV)/.installed-all
	$(BIN)/federa run

test: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict src
	$(BIN)/pytest -q

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/simulation.py

# Regenerate the protobuf code checked in under transport/grpc/_proto (codec.py is its only user).
PROTO_OUT := src/federa/transport/grpc/_proto
proto: $(VENV)/.installed-dev
	rm -rf .proto-build && mkdir .proto-build
	$(BIN)/python -m grpc_tools.protoc -Iprotos --python_out=.proto-build --pyi_out=.proto-build protos/federa/v1/federa.proto
	cp .proto-build/federa/v1/federa_pb2.py .proto-build/federa/v1/federa_pb2.pyi $(PROTO_OUT)/
	rm -rf .proto-build

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis

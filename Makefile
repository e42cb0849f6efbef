# Two commands on a fresh Debian / Raspberry Pi OS machine: `make demo` and `make test`.
# Each installs what it needs: apt packages when missing, a .venv, the package with its extras.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := mosquitto mosquitto-clients libsystemd-dev pkg-config gcc python3-dev nats-server gpsd-clients debootstrap dpkg-dev fakeroot systemd udev util-linux
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP := $(VENV)/.installed

.PHONY: all test demo bench lint typecheck deb clean apt venv

all: test

apt:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing apt packages:$$missing"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@dpkg-query -W -f='$${Status}' python3-venv 2>/dev/null | grep -q "install ok installed" || \
	  $(PYTHON) -c 'import ensurepip' 2>/dev/null || \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv

$(STAMP): pyproject.toml | apt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,systemd,pi]'
	@touch $@

venv: apt $(STAMP)

lint: venv
	$(BIN)/ruff check agent drivers simulator tests bench
	$(BIN)/mypy

test: venv
	$(BIN)/ruff check agent drivers simulator tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

demo: venv
	$(BIN)/python -m agent.demo

bench: venv
	$(BIN)/python -m bench

deb: venv
	bash image-build/build-deb.sh

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache

# metricsd — the two commands a new user needs are `make run` and `make test`; both install what they need.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# The Swift toolchain is not an apt package: use the one on PATH, else the usual install location.
SWIFT        ?= $(or $(shell command -v swift 2>/dev/null),$(wildcard /opt/swift/usr/bin/swift),swift)
PREFIX       ?= /usr/local
BUILD_FLAGS  ?=
FUZZ_TIME    ?= 30
FUZZ_SCRATCH := .build-fuzz
BENCH_SCRATCH:= .build-bench
ORACLE_DIR   := .build-oracle
GO_ENV       := GOPATH=/usr/share/gocode GO111MODULE=off GOCACHE=$(CURDIR)/$(ORACLE_DIR)/gocache GOFLAGS=-mod=mod
DIFF_DIR     := Tests/LineProtocolTests/Fixtures/differential
INFLUX_TEST_GO := /usr/share/gocode/src/github.com/influxdata/influxdb/models/points_test.go

# System packages: what the daemon links against, and what the tests use (the InfluxDB parser as an oracle,
# a real influxd, Go to build the oracle and the peer benchmarks).
APT_RUN  := libcurl4-openssl-dev libsqlite3-dev zlib1g-dev libdeflate-dev libre2-dev netcat-openbsd curl
APT_TEST := $(APT_RUN) golang-go golang-github-influxdb-influxdb-dev influxdb influxdb-client python3 python3-pip \
            python3-venv systemd procps strace clickhouse-server clickhouse-client chromium
# Offline Kubernetes schema validation of deploy/kubernetes, pinned, in its own virtualenv (the test finds it there).
KUBERNETES_VALIDATE := kubernetes-validate==1.37.0
# InfluxDB's Python clients (the compatibility test writes through them), pinned.
INFLUX_PYTHON_CLIENTS := influxdb==5.3.2 influxdb-client==1.50.0
TOOLS_VENV := .build-tools/venv
APT_BENCH:= $(APT_TEST) golang-github-victoriametrics-victoriametrics-dev golang-github-valyala-fastjson-dev \
            golang-github-victoriametrics-metrics-dev golang-github-victoriametrics-metricsql-dev victoria-metrics gcc \
            gnuplot-nox

.PHONY: help deps deps-test deps-bench build run install uninstall test soak lint swift-test oracle oracle-check oracle-update \
        fuzz fuzz-build fuzz-replay bench bench-parse bench-ingest bench-storage bench-flush bench-forward bench-query bench-events bench-memory clean

help:
	@echo "make run      build (release) and start metricsd in the foreground"
	@echo "make test     install test dependencies, build, run every test"
	@echo "make fuzz     fuzz every parser for FUZZ_TIME seconds each (default $(FUZZ_TIME))"
	@echo "make soak     mixed load with forwarding for SOAK_SECONDS (default $(SOAK_SECONDS)); report in docs/SOAK.md"
	@echo "make bench    run the benchmarks and rewrite docs/PERFORMANCE.md (or one: make bench-parse,"
	@echo "              bench-ingest, bench-memory, bench-storage, bench-flush, bench-forward, bench-query, bench-events)"

deps:
	@scripts/apt-ensure.sh $(APT_RUN)

# Python tools the tests run go into their own virtualenv (Debian's python3 refuses system-wide pip installs), and
# the tests run them from there: the pinned kubernetes-validate and InfluxDB's Python clients.
deps-test:
	@scripts/apt-ensure.sh $(APT_TEST)
	@[ -x $(TOOLS_VENV)/bin/python ] || python3 -m venv $(TOOLS_VENV)
	@[ "$$($(TOOLS_VENV)/bin/pip show kubernetes-validate 2>/dev/null | sed -n 's/^Version: //p')" = "$(lastword $(subst ==, ,$(KUBERNETES_VALIDATE)))" ] || \
	  $(TOOLS_VENV)/bin/pip install --quiet --disable-pip-version-check "$(KUBERNETES_VALIDATE)"
	@$(TOOLS_VENV)/bin/python -c "import influxdb, influxdb_client" 2>/dev/null || \
	  $(TOOLS_VENV)/bin/pip install --quiet --disable-pip-version-check $(INFLUX_PYTHON_CLIENTS)

deps-bench:
	@scripts/apt-ensure.sh $(APT_BENCH)

build: deps
	$(SWIFT) build -c release $(BUILD_FLAGS)

run: build
	@mkdir -p var
	exec .build/release/metricsd serve --data-dir ./var

# ---- install (PREFIX, DESTDIR; SYSCONFDIR for the configuration, /etc as the unit expects) ----------------
# BIN=path installs that binary instead of building the release one (the install test uses the debug build).

SYSCONFDIR ?= /etc
BIN        ?= .build/release/metricsd
UNITDIR    ?= $(PREFIX)/lib/systemd/system
SHAREDIR   := $(PREFIX)/share/metricsd
DOCDIR     := $(PREFIX)/share/doc/metricsd
INSTALL_BUILD := $(if $(filter command line,$(origin BIN)),,build)
DOCS       := README.md metricsd.example.toml docs/*.md

install: $(INSTALL_BUILD)
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/metricsd
	install -d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SHAREDIR)/grafana/dashboards \
	  $(DESTDIR)$(SHAREDIR)/grafana/provisioning/dashboards $(DESTDIR)$(SHAREDIR)/grafana/provisioning/datasources \
	  $(DESTDIR)$(DOCDIR) $(DESTDIR)$(SYSCONFDIR)/metricsd
	sed -e 's#/usr/local/bin/metricsd#$(PREFIX)/bin/metricsd#' -e 's#/etc/metricsd/#$(SYSCONFDIR)/metricsd/#' \
	  -e 's#/usr/local/share/doc/metricsd#$(DOCDIR)#' systemd/metricsd.service > $(DESTDIR)$(UNITDIR)/metricsd.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/metricsd.service
	install -m 0644 grafana/dashboards/*.json $(DESTDIR)$(SHAREDIR)/grafana/dashboards/
	install -m 0644 grafana/provisioning/dashboards/*.yaml $(DESTDIR)$(SHAREDIR)/grafana/provisioning/dashboards/
	install -m 0644 grafana/provisioning/datasources/*.yaml $(DESTDIR)$(SHAREDIR)/grafana/provisioning/datasources/
	install -m 0644 grafana/README.md $(DESTDIR)$(SHAREDIR)/grafana/
	install -m 0644 $(DOCS) $(DESTDIR)$(DOCDIR)/
	@# The configuration is the operator's: installed once, never overwritten.
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/metricsd/metricsd.toml ]; then \
	  echo "kept $(DESTDIR)$(SYSCONFDIR)/metricsd/metricsd.toml (the new example is $(DOCDIR)/metricsd.example.toml)"; \
	else install -m 0644 metricsd.example.toml $(DESTDIR)$(SYSCONFDIR)/metricsd/metricsd.toml; fi
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; \
	  echo "installed; start with: systemctl enable --now metricsd"; fi

# Removes what install put there except the configuration and the data (/var/lib/metricsd).
uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/metricsd $(DESTDIR)$(UNITDIR)/metricsd.service
	rm -rf $(DESTDIR)$(SHAREDIR) $(DESTDIR)$(DOCDIR)
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
	@echo "kept $(DESTDIR)$(SYSCONFDIR)/metricsd/metricsd.toml and the data under /var/lib/metricsd"

lint:
	$(SWIFT) format lint --strict --recursive Sources Tests FuzzTesting Benchmarks Package.swift

# ---- tests -----------------------------------------------------------------------------------------------

# Swift Testing's summary must be the last line of the output (CI reads the closing line), so it runs last.
test: deps-test lint oracle-check influxql-oracle-check fuzz-replay swift-test

swift-test:
	$(SWIFT) build --build-tests $(BUILD_FLAGS)
	$(SWIFT) test --skip-build --disable-xctest $(BUILD_FLAGS)

# The differential oracle: InfluxDB 1.6's own parser, built from Debian's Go sources.
oracle: $(ORACLE_DIR)/lporacle
$(ORACLE_DIR)/lporacle: tools/lporacle/main.go
	@mkdir -p $(ORACLE_DIR)
	cd tools/lporacle && $(GO_ENV) go build -o $(CURDIR)/$(ORACLE_DIR)/lporacle .

# The committed oracle answers must still be what InfluxDB's parser says.
oracle-check: deps-test oracle
	@set -e; \
	$(ORACLE_DIR)/lporacle < $(DIFF_DIR)/corpus.lp | cmp -s - $(DIFF_DIR)/corpus.influx.jsonl || \
	  { echo "oracle output differs from $(DIFF_DIR)/corpus.influx.jsonl (run make oracle-update)"; exit 1; }; \
	for p in ns us ms s m h; do \
	  $(ORACLE_DIR)/lporacle -precision $$p < $(DIFF_DIR)/timestamps.lp | cmp -s - $(DIFF_DIR)/timestamps.$$p.influx.jsonl || \
	  { echo "oracle output differs for precision $$p"; exit 1; }; \
	done; echo "oracle: committed InfluxDB answers verified ($$(wc -l < $(DIFF_DIR)/corpus.lp) + $$(wc -l < $(DIFF_DIR)/timestamps.lp) cases)"

oracle-update: deps-test oracle
	python3 tools/lpcorpus.py $(INFLUX_TEST_GO) $(DIFF_DIR)/corpus.lp --timestamps $(DIFF_DIR)/timestamps.lp
	$(ORACLE_DIR)/lporacle < $(DIFF_DIR)/corpus.lp > $(DIFF_DIR)/corpus.influx.jsonl
	for p in ns us ms s m h; do $(ORACLE_DIR)/lporacle -precision $$p < $(DIFF_DIR)/timestamps.lp > $(DIFF_DIR)/timestamps.$$p.influx.jsonl; done

# The InfluxQL differential suite's influxd answers (Tests/InfluxQLTests/Fixtures/differential/answers.jsonl):
# recorded from a real influxd over the committed data and queries, re-verified here against a live influxd
# (started on a free port in a temp dir, stopped by PID). The Swift suite compares metricsd's engine with them.
INFLUXQL_DIFF := Tests/InfluxQLTests/Fixtures/differential

influxql-oracle-check: deps-test
	python3 tools/influxql_oracle.py check $(INFLUXQL_DIFF)

influxql-oracle-update: deps-test
	python3 tools/influxql_data.py /tmp/influxql-data.lp && gzip -9n -c /tmp/influxql-data.lp > $(INFLUXQL_DIFF)/data.lp.gz
	python3 tools/influxql_corpus.py $(INFLUXQL_DIFF)/queries.txt
	python3 tools/influxql_oracle.py record $(INFLUXQL_DIFF) $(INFLUXQL_DIFF)/answers.jsonl

# ---- soak: mixed UDP/TCP/HTTP/events load with forwarding to a real influxd (make test runs it for 60 s) ------

SOAK_SECONDS ?= 600

soak: deps-test
	$(SWIFT) build --build-tests $(BUILD_FLAGS)
	METRICSD_SOAK_SECONDS=$(SOAK_SECONDS) METRICSD_SOAK_REPORT=$(CURDIR)/docs/SOAK.md \
	  $(SWIFT) test --skip-build --disable-xctest --filter SoakTests $(BUILD_FLAGS)

# ---- fuzzing (libFuzzer; recipe in docs/fuzzing.md) ------------------------------------------------------

FUZZERS := FuzzLineProtocol FuzzInfluxQL FuzzEvents FuzzConfig FuzzHTTPParameters
# TOMLKit's C++ shim leaks the key strings of TOMLTable.keys (a few bytes per parse; the daemon parses at start and
# on reload): leak detection is off for the config fuzzer only (libFuzzer's and LeakSanitizer's at exit: the latter
# had failed every run unseen, before pipefail); crashes, overflows and round-trip failures count.
FUZZ_CONFIG_OPTIONS := -detect_leaks=0 -max_len=2048

fuzz-build:
	@set -e; for f in $(FUZZERS); do \
	  METRICSD_FUZZ=1 $(SWIFT) build -c debug --scratch-path $(FUZZ_SCRATCH) --product $$f \
	    --sanitize fuzzer -Xswiftc -sanitize=fuzzer,address 2>&1 | grep -v "Cannot export local symbol" || true; \
	  test -x $(FUZZ_SCRATCH)/debug/$$f; done

# Replays every saved crasher, then fuzzes briefly from the seed corpus. A crash fails the target and prints the
# fuzzer's report (its last 60 lines: the stack and the input's name); otherwise the last lines of its stats.
fuzz-replay: fuzz-build
	@set -e -o pipefail; for f in $(FUZZERS); do \
	  if ls FuzzTesting/FailCases/$$f/* >/dev/null 2>&1; then \
	    env $$([ $$f = FuzzConfig ] && echo ASAN_OPTIONS=detect_leaks=0) SWIFT_BACKTRACE=enable=no \
	      $(FUZZ_SCRATCH)/debug/$$f FuzzTesting/FailCases/$$f/* ; fi; \
	  mkdir -p $(FUZZ_SCRATCH)/corpus/$$f; \
	  env $$([ $$f = FuzzConfig ] && echo ASAN_OPTIONS=detect_leaks=0) SWIFT_BACKTRACE=enable=no \
	    $(FUZZ_SCRATCH)/debug/$$f $(FUZZ_SCRATCH)/corpus/$$f FuzzTesting/Corpus/$$f -dict=FuzzTesting/$$f.dict \
	    -max_total_time=$(FUZZ_TIME) $$([ $$f = FuzzConfig ] && echo "$(FUZZ_CONFIG_OPTIONS)" || echo -max_len=512) \
	    -print_final_stats=1 -artifact_prefix=$(FUZZ_SCRATCH)/ > $(FUZZ_SCRATCH)/$$f.log 2>&1 \
	    || { tail -60 $(FUZZ_SCRATCH)/$$f.log; echo "$$f found a crash: its input is under $(FUZZ_SCRATCH)/"; exit 1; }; \
	  tail -4 $(FUZZ_SCRATCH)/$$f.log; \
	done

fuzz: FUZZ_TIME=300
fuzz: fuzz-replay

# ---- benchmarks -------------------------------------------------------------------------------------------

bench: bench-parse bench-ingest bench-memory bench-storage bench-flush bench-forward bench-query bench-events

bench-parse: deps-bench
	scripts/bench-parse.sh

bench-ingest: deps-bench build
	scripts/bench-ingest.sh

bench-memory: deps-bench build
	scripts/bench-memory.sh

bench-storage: deps-bench build
	scripts/bench-storage.sh

bench-flush: deps-bench build
	scripts/bench-flush.sh

bench-forward: deps-bench build
	scripts/bench-forward.sh

bench-query: deps-bench build
	scripts/bench-query.sh

bench-events: deps-bench build
	scripts/bench-events.sh

clean:
	rm -rf .build .build-* var

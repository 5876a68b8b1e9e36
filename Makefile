# buildvm - ephemeral untrusted-build runner
#
#   make demo         set up everything and run the main job end to end (README)
#   make test         set up everything and run all the tests (README, CI)
#   make              the `buildvm` binary and the guest agent
#   make deps         install every Debian package the build and the tests need
#   make images       the guest kernel and the `minimal` rootfs (cached)
#   make image-debian the `debian` rootfs with a build toolchain
#   make base-images  the runtime base images (base/debian:12, base/node:18, base/python:3.11; cached)
#   make check        format and lint checks, unit tests, sanitizer unit tests, integration tests
#   make bench        the benchmarks in bench/
#   make fuzz         libFuzzer targets for FUZZ_SECONDS each (docs/fuzzing.md)
#   make fuzz-corpus  replay every fuzz corpus with the standalone drivers (part of check)
#   make format       clang-format every C file (format-check: part of check)
#   make lint         cppcheck and clang-tidy (part of check)

VERSION := 0.1.0
CC ?= gcc
BUILD ?= build
OPT ?= -O2 -g

# One list of every Debian package the build, the images and the tests need.
DEBIAN_PACKAGES := \
	build-essential pkg-config clang llvm libclang-rt-14-dev \
	libgit2-dev libarchive-dev libcurl4-openssl-dev libjansson-dev liblz4-dev zlib1g-dev \
	libcmocka-dev libssl-dev libhiredis-dev libmicrohttpd-dev libseccomp-dev \
	qemu-system-x86 busybox-static e2fsprogs libext2fs-dev \
	linux-source-6.1 bc flex bison libelf-dev xz-utils debootstrap \
	docker-registry redis-server skopeo umoci runc git apache2-utils curl openssl \
	jq lz4 procps iproute2 python3 python3-jsonschema clang-format cppcheck clang-tidy
# the S3 artifact store tests: a single-node Ceph with a RADOS Gateway
# (tests/services/ceph-rgw.sh) and an independent S3 client
DEBIAN_PACKAGES += ceph-mon ceph-osd radosgw s3cmd
# t_egress: a name that resolves to the metadata address, without a DNS
# server (NSS_WRAPPER_HOSTS, preloaded into the runner only)
DEBIAN_PACKAGES += libnss-wrapper
# bench/dockerfile.sh: the same Dockerfile built by buildah on the host
DEBIAN_PACKAGES += buildah
# t_examples_deps: npm installs verdaccio (a Node.js from elsewhere may bring
# its own npm, which Debian's would conflict with)
DEBIAN_PACKAGES += nodejs $(if $(shell command -v npm 2>/dev/null),,npm)

PKGS := libgit2 libarchive libcurl jansson liblz4 openssl hiredis libmicrohttpd libseccomp zlib ext2fs com_err
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS))
PKG_LIBS = $(shell pkg-config --libs $(PKGS))

WARN := -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wno-format-nonliteral \
	-Wmissing-prototypes -Wstrict-prototypes -Wvla -Wundef -Wpointer-arith
CPPFLAGS += -D_GNU_SOURCE -DBUILDVM_VERSION='"$(VERSION)"' -Irunner/lib -Irunner/cli
BASE_CFLAGS = -std=gnu11 $(OPT) $(WARN) -fno-strict-aliasing -fstack-protector-strong \
	-D_FORTIFY_SOURCE=2 -fPIE $(PKG_CFLAGS)
LDFLAGS += -pie -Wl,-z,relro,-z,now
SAN_FLAGS := -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer

# runner/lib/*/ holds the drivers of a module (vm/, queue/): their objects,
# sanitizer and fuzz builds included, come from this one list.
LIB_SRC := $(sort $(wildcard runner/lib/*.c runner/lib/*/*.c))
CLI_SRC := $(sort $(wildcard runner/cli/*.c))
UNIT_SRC := $(sort $(wildcard tests/unit/test_*.c))
SUPPORT_SRC := $(sort $(wildcard tests/unit/support/*.c))
AGENT_SRC := $(sort $(wildcard buildvm-image/agent/*.c))

LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
CLI_OBJ := $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
SUPPORT_OBJ := $(SUPPORT_SRC:%.c=$(BUILD)/obj/%.o)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
ASAN_LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/asan/%.o)
ASAN_SUPPORT_OBJ := $(SUPPORT_SRC:%.c=$(BUILD)/asan/%.o)
ASAN_UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/asan-tests/%)

# Fault points (runner/lib/fault.h) are compiled into test builds only: the
# files that include fault.h are compiled a second time with the flag, under
# $(BUILD)/fault, and replace their production objects in the unit tests'
# library and in $(BUILD)/test/buildvm, the binary the integration tests run.
# The sanitizer library, test-only, is compiled with the flag throughout.
FAULT_CPPFLAGS := -DBUILDVM_FAULT_INJECTION
FAULT_SRC := $(shell grep -l '^\#include "fault\.h"' $(LIB_SRC) $(CLI_SRC))
FAULT_OBJ := $(FAULT_SRC:%.c=$(BUILD)/fault/%.o)
TEST_LIB_OBJ := $(filter-out $(FAULT_SRC:%.c=$(BUILD)/obj/%.o),$(LIB_OBJ)) \
	$(filter $(FAULT_SRC:%.c=$(BUILD)/fault/%.o),$(LIB_SRC:%.c=$(BUILD)/fault/%.o))
TEST_CLI_OBJ := $(filter-out $(FAULT_SRC:%.c=$(BUILD)/obj/%.o),$(CLI_OBJ)) \
	$(filter $(FAULT_SRC:%.c=$(BUILD)/fault/%.o),$(CLI_SRC:%.c=$(BUILD)/fault/%.o))

IMAGES := $(BUILD)/images

.SECONDARY:

.PHONY: test demo all deps images image-minimal image-debian base-images check host-check unit unit-asan \
	integration bench fuzz fuzz-corpus format format-check lint clean distclean

all: $(BUILD)/buildvm $(BUILD)/buildvm-agent

# The README's two commands: each does all of its own set-up on a fresh machine.
# The images (a kernel build, debootstrap, apt downloads) and the host-only
# checks (lint, unit tests) need nothing of each other: they run at once,
# the images' output in $(BUILD)/images.log (its tail printed if it fails),
# then the integration tests, which need both.
test: deps
	$(MAKE) all
	@mkdir -p $(BUILD)
	@echo "images: building in the background (log: $(BUILD)/images.log)"
	@$(MAKE) -j3 images image-debian base-images >$(BUILD)/images.log 2>&1 & img=$$!; \
	$(MAKE) host-check; hc=$$?; \
	wait $$img; im=$$?; \
	if [ $$im != 0 ]; then tail -n 40 $(BUILD)/images.log; echo "images: failed"; \
	else echo "images: built"; fi; \
	[ $$hc = 0 ] && [ $$im = 0 ]
	$(MAKE) integration

demo: deps
	$(MAKE) all
	$(MAKE) images
	examples/demo.sh

deps:
	@missing=$$(for p in $(DEBIAN_PACKAGES); do \
		dpkg-query -W -f '$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	else echo "all $(words $(DEBIAN_PACKAGES)) packages are installed"; fi

# --- the runner ---------------------------------------------------------------

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC $<"; $(CC) $(CPPFLAGS) $(BASE_CFLAGS) $(CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/libbuildvm.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/buildvm: $(CLI_OBJ) $(BUILD)/libbuildvm.a
	$(CC) $(LDFLAGS) -o $@ $(CLI_OBJ) $(BUILD)/libbuildvm.a $(PKG_LIBS) -lm

$(BUILD)/fault/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC-FAULT $<"; $(CC) $(CPPFLAGS) $(FAULT_CPPFLAGS) $(BASE_CFLAGS) $(CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/libbuildvm-test.a: $(TEST_LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/test/buildvm: $(TEST_CLI_OBJ) $(BUILD)/libbuildvm-test.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $(TEST_CLI_OBJ) $(BUILD)/libbuildvm-test.a $(PKG_LIBS) -lm

# tests/lib/s3-tool.c: the S3 store's code driven by the integration tests and
# the bench (never installed)
$(BUILD)/test/s3-tool: tests/lib/s3-tool.c $(BUILD)/libbuildvm-test.a
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(BASE_CFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libbuildvm-test.a $(PKG_LIBS) -lm

# --- the guest agent: static, no libraries, runs as PID 1 in the guest ----------

AGENT_CFLAGS := -std=gnu11 -Os -g0 $(WARN) -D_GNU_SOURCE -static -fno-strict-aliasing
$(BUILD)/buildvm-agent: $(AGENT_SRC) $(wildcard buildvm-image/agent/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(AGENT_CFLAGS) -o $@ $(AGENT_SRC)

# --- images -------------------------------------------------------------------

images: image-minimal
image-minimal: $(BUILD)/buildvm-agent
	buildvm-image/build-image.sh $(IMAGES) minimal $(BUILD)/buildvm-agent
image-debian: $(BUILD)/buildvm-agent
	buildvm-image/build-image.sh $(IMAGES) debian $(BUILD)/buildvm-agent
# OCI layouts under $(IMAGES)/base/, from the machine's apt; push them with
# buildvm-image/base/push-base.sh HOST:PORT
base-images:
	buildvm-image/base/build-base.sh $(IMAGES)/base

# --- tests --------------------------------------------------------------------

$(BUILD)/tests/%: tests/unit/%.c $(SUPPORT_OBJ) $(BUILD)/libbuildvm-test.a
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(FAULT_CPPFLAGS) -Itests/unit/support $(BASE_CFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $< \
		$(SUPPORT_OBJ) $(BUILD)/libbuildvm-test.a $(PKG_LIBS) -lcmocka -lm

$(BUILD)/asan/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(FAULT_CPPFLAGS) $(filter-out -O2 -D_FORTIFY_SOURCE=2,$(BASE_CFLAGS)) $(SAN_FLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/libbuildvm-asan.a: $(ASAN_LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/asan-tests/%: tests/unit/%.c $(ASAN_SUPPORT_OBJ) $(BUILD)/libbuildvm-asan.a
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(FAULT_CPPFLAGS) -Itests/unit/support $(filter-out -O2 -D_FORTIFY_SOURCE=2,$(BASE_CFLAGS)) \
		$(SAN_FLAGS) $(LDFLAGS) -o $@ $< $(ASAN_SUPPORT_OBJ) $(BUILD)/libbuildvm-asan.a \
		$(PKG_LIBS) -lcmocka -lm

# Unit tests that need a real registry or redis get them from with-services.sh.
unit: $(UNIT_BIN) $(BUILD)/buildvm
	tests/with-services.sh tests/run-unit.sh $(UNIT_BIN)

unit-asan: $(ASAN_UNIT_BIN) $(BUILD)/buildvm
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
		tests/with-services.sh tests/run-unit.sh $(ASAN_UNIT_BIN)

integration: all $(BUILD)/test/buildvm $(BUILD)/test/s3-tool image-minimal
	tests/with-services.sh tests/integration/run.sh

# The unit tests run once, built with ASan and UBSan (`make unit` is the
# same tests without them, the quicker loop while working on a module)
host-check: format-check lint unit-asan fuzz-corpus
check: host-check integration

bench: all image-minimal $(BUILD)/bench/store-write $(BUILD)/test/s3-tool
	bench/run.sh

# bench/pipeline.sh's encryption-at-rest ratio: the store, plain and sealed
$(BUILD)/bench/store-write: bench/store_write.c $(BUILD)/libbuildvm.a
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(BASE_CFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libbuildvm.a $(PKG_LIBS) -lm

# Every C file we write (.clang-format): `format` rewrites them, `format-check`
# (part of check) names the files it would change and fails.
FORMAT_SRC = $(sort $(LIB_SRC) $(CLI_SRC) $(AGENT_SRC) $(UNIT_SRC) $(SUPPORT_SRC) \
	$(wildcard runner/lib/*.h runner/lib/*/*.h runner/cli/*.h buildvm-image/agent/*.h \
		tests/unit/support/*.h tests/fuzz/*.c tests/fuzz/*.h bench/*.c))

# Static analysis (part of check, about 2 minutes on two cores): cppcheck
# with jansson's loops (tests/lint/jansson.cfg) and its suppressions, each
# with its reason (tests/lint/cppcheck.supp); clang-tidy with .clang-tidy,
# the fault points compiled in so their code is analysed too.
LINT_SRC = $(LIB_SRC) $(CLI_SRC)
LINT_CPPFLAGS = $(CPPFLAGS) $(FAULT_CPPFLAGS) $(PKG_CFLAGS)

lint:
	cppcheck -q -j2 --enable=warning --std=c11 --library=posix --library=gnu \
		--library=tests/lint/jansson.cfg -D_GNU_SOURCE -Irunner/lib -Irunner/cli --inline-suppr \
		--suppressions-list=tests/lint/cppcheck.supp --error-exitcode=1 \
		--template='{file}:{line}: {severity} ({id}): {message}' runner buildvm-image/agent
	@echo $(LINT_SRC) | xargs -n4 -P2 sh -c 'clang-tidy --quiet "$$@" -- -std=gnu11 \
		$(subst ','"'"',$(LINT_CPPFLAGS)) 2>/dev/null' clang-tidy || \
		{ echo "lint: clang-tidy found the problems above"; exit 1; }
	@echo "lint: cppcheck and clang-tidy are clean"

format:
	clang-format -i $(FORMAT_SRC)

format-check:
	@bad=$$(for f in $(FORMAT_SRC); do \
		clang-format --dry-run -Werror $$f >/dev/null 2>&1 || echo $$f; done); \
	if [ -n "$$bad" ]; then \
		echo "format-check: clang-format would change these files (make format):"; \
		for f in $$bad; do echo "  $$f"; done; exit 1; \
	else echo "format-check: $(words $(FORMAT_SRC)) files formatted"; fi

clean:
	rm -rf $(BUILD)/obj $(BUILD)/fault $(BUILD)/test $(BUILD)/asan $(BUILD)/tests $(BUILD)/asan-tests $(BUILD)/*.a \
		$(BUILD)/buildvm $(BUILD)/buildvm-agent $(BUILD)/fuzz

# --- fuzzing (tests/fuzz, docs/fuzzing.md) -------------------------------------
#
# Each tests/fuzz/fuzz_<name>.c is linked twice: with libFuzzer (clang, objects
# of their own under $(BUILD)/fuzz/obj because -fsanitize=fuzzer-no-link
# instruments them for coverage) for `make fuzz`, and with
# tests/fuzz/standalone.c against the gcc sanitizer library for
# `make fuzz-corpus`, which replays tests/fuzz/corpus/<name>/.

FUZZ_SECONDS ?= 30
FUZZ_CC ?= clang
FUZZ_SRC := $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_NAMES := $(FUZZ_SRC:tests/fuzz/fuzz_%.c=%)
FUZZ_LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/fuzz/obj/%.o)
FUZZ_BIN := $(FUZZ_NAMES:%=$(BUILD)/fuzz/bin/fuzz_%)
FUZZ_STANDALONE := $(FUZZ_NAMES:%=$(BUILD)/fuzz/standalone/fuzz_%)
FUZZ_CFLAGS = $(filter-out -O2 -D_FORTIFY_SOURCE=2,$(BASE_CFLAGS)) $(SAN_FLAGS)

$(BUILD)/fuzz/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC-FUZZ $<"; $(FUZZ_CC) $(CPPFLAGS) $(FUZZ_CFLAGS) \
		-fsanitize=fuzzer-no-link -MMD -MP -c -o $@ $<

$(BUILD)/libbuildvm-fuzz.a: $(FUZZ_LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/fuzz/bin/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz.h $(BUILD)/libbuildvm-fuzz.a
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CPPFLAGS) -Itests/fuzz $(FUZZ_CFLAGS) -fsanitize=fuzzer $(LDFLAGS) -o $@ $< \
		$(BUILD)/libbuildvm-fuzz.a $(PKG_LIBS) -lm

$(BUILD)/fuzz/standalone/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/standalone.c tests/fuzz/fuzz.h \
		$(BUILD)/libbuildvm-asan.a
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -Itests/fuzz $(FUZZ_CFLAGS) $(LDFLAGS) -o $@ $< tests/fuzz/standalone.c \
		$(BUILD)/libbuildvm-asan.a $(PKG_LIBS) -lm

fuzz-corpus: $(FUZZ_STANDALONE)
	tests/fuzz/run.sh replay $(BUILD)/fuzz $(FUZZ_NAMES)

fuzz: $(FUZZ_BIN)
	tests/fuzz/run.sh fuzz $(BUILD)/fuzz $(FUZZ_SECONDS) $(FUZZ_NAMES)

-include $(FUZZ_LIB_OBJ:.o=.d)
$(BUILD)/fuzz/obj/runner/lib/policy.o: policies/build-role.json policies/boundary.json

# distclean also drops the cached kernel and rootfs images
distclean:
	rm -rf $(BUILD)

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(SUPPORT_OBJ:.o=.d) $(ASAN_LIB_OBJ:.o=.d) $(FAULT_OBJ:.o=.d)

# policy.o embeds the default policies with .incbin (see runner/lib/policy.c)
$(BUILD)/obj/runner/lib/policy.o $(BUILD)/asan/runner/lib/policy.o: policies/build-role.json policies/boundary.json

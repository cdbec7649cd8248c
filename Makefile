# kubespan.mesh: release and documentation tasks. Run scripts/setup.sh once first (it makes .venv).
#
#   make release            lint the changelog fragments, build the collection tarball into build/release/
#   make changelog          lint the fragments, write CHANGELOG.md (released versions, plus a preview of the
#                           next version from the fragments while it is unreleased)
#   make changelog-release  cut the version of galaxy.yml: move the fragments into changelogs/changelog.yaml
#                           and write CHANGELOG.md (once per release; commit the result)
#   make docs-lint          antsibull-docs lint of the modules, role and filter docs, antsibull-changelog
#                           lint, ansible-doc renders every module with examples and return values,
#                           relative links in README.md, docs/ and the role README resolve
#   make installed-test     tests/installed/run.sh: install the tarball in a clean collections path, run
#                           the playbooks by FQCN against two containers
#   make sanity-matrix      nox: ansible-test sanity with ansible-core 2.17 and 2.19
#   make clean              remove build/release
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VENV ?= .venv
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
# Never let a collection in the venv's site-packages answer for this one.
export ANSIBLE_COLLECTIONS_SCAN_SYS_PATH := false

VERSION := $(shell sed -n 's/^version: *//p' galaxy.yml)
RELEASE_DIR := build/release
TARBALL := $(RELEASE_DIR)/kubespan-mesh-$(VERSION).tar.gz

.PHONY: help release changelog changelog-lint changelog-release docs-lint installed-test sanity-matrix clean

help:
	@sed -n 's/^#   make /  make /p' Makefile

changelog-lint:
	antsibull-changelog lint

release: changelog-lint
	rm -rf $(RELEASE_DIR)
	mkdir -p $(RELEASE_DIR)
	ansible-galaxy collection build --output-path $(RELEASE_DIR) .
	@test -f $(TARBALL)
	@cd $(RELEASE_DIR) && sha256sum kubespan-mesh-$(VERSION).tar.gz | tee kubespan-mesh-$(VERSION).tar.gz.sha256
	@echo "built $(TARBALL): $$(stat -c %s $(TARBALL)) bytes, $$(tar -tzf $(TARBALL) | wc -l) entries"

# While changelogs/changelog.yaml has no release of galaxy.yml's version, CHANGELOG.md shows that version
# from the fragments as "(unreleased)": antsibull-changelog release runs in a temporary copy, so the
# fragments stay where they are.
changelog: changelog-lint
	@if grep -q "^  '\?$(VERSION)'\?:" changelogs/changelog.yaml; then \
	    antsibull-changelog generate; \
	else \
	    tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	    git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -C "$$tmp" -xf -; \
	    (cd "$$tmp" && antsibull-changelog release --version $(VERSION) >/dev/null); \
	    sed 's/^## v\(.*\)$$/## v\1 (unreleased)/' "$$tmp/CHANGELOG.md" >CHANGELOG.md; \
	fi
	@echo "wrote CHANGELOG.md"

changelog-release: changelog-lint
	antsibull-changelog release --version $(VERSION)
	@echo "released $(VERSION) in changelogs/changelog.yaml and CHANGELOG.md: commit both and the removed fragments"

docs-lint:
	bash tests/installed/docs-lint.sh

installed-test:
	bash tests/installed/run.sh

sanity-matrix:
	nox -s sanity

clean:
	rm -rf $(RELEASE_DIR)

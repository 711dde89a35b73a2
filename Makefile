# Two commands for a newcomer on a fresh machine:
#   make demo   create .venv, install, run the main job on the embedded default data
#   make test   create .venv, install, run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo render-demo test test-matrix bench clean

install: $(STAMP)

$(STAMP): setup.py requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install -e '.[dev,fid]'
	touch $(STAMP)

# The demo: make the synthetic test split if missing (a rerun keeps what exists), reconstruct 4 of
# its images with the shipped prior, evaluate them against the 3D ground truth.
DEMO_OUT ?= outputs/demo
demo: install
	$(PY) scripts/make_synthetic.py --config configs/synthetic.yaml --set 'synthetic.splits={test: 200}'
	$(PY) scripts/invert.py --config configs/synthetic.yaml --out $(DEMO_OUT) --set inversion.limit=4
	$(PY) scripts/evaluate.py --config configs/synthetic.yaml --results $(DEMO_OUT)
	@echo "Meshes: $(DEMO_OUT)/<image id>/mesh.obj (+ .mtl, .png), turntable.gif, render.png; report: $(DEMO_OUT)/report.md"

render-demo: install
	$(PY) scripts/render_mesh.py --config configs/render_demo.yaml
	@echo "Outputs in outputs/render_demo/: turntable.png, mesh.obj + mesh.mtl + mesh.png"

test: install
	$(PY) -m pytest -q

# The float-sensitive tests (mark `numeric`) under every CPU kernel set (default, AVX2, AVX-512 where
# the CPU has it) and 1 and 2 threads. MATRIX_SELECT= (empty) runs the whole suite that way.
MATRIX_SELECT ?= -m numeric
test-matrix: install
	tests/matrix.sh $(PY) $(MATRIX_SELECT)

bench: install
	$(PY) bench/render.py

clean:
	rm -rf $(VENV) outputs

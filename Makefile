# Two commands for a newcomer on a fresh machine:
#   make demo   create .venv, install, run the main job on the embedded default data
#   make test   create .venv, install, run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test bench clean

install: $(STAMP)

$(STAMP): setup.py requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install -e '.[dev,fid]'
	touch $(STAMP)

demo: install
	$(PY) scripts/render_mesh.py --config configs/render_demo.yaml
	@echo "Outputs in outputs/render_demo/: turntable.png, mesh.obj + mesh.mtl + mesh.png"

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) bench/render.py

clean:
	rm -rf $(VENV) outputs

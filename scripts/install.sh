# Sourced by run.sh and test.sh: a virtual environment in .venv with the package and its pins.
python3 -m venv .venv
source .venv/bin/activate
if ! pip install -q -e '.[test]'; then
  echo "install failed: pip install -e '.[test]'" >&2
  exit 1
fi

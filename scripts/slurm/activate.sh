# shellcheck shell=bash
# Sourced by the sbatch scripts: activates the Python environment named by PYTHON_ENV.
#   a virtualenv folder (it holds bin/activate)   sbatch --export=ALL,PYTHON_ENV=$HOME/venvs/proj ...
#   a conda environment name or prefix            sbatch --export=ALL,PYTHON_ENV=proj ...
#                                                 (conda must be on PATH in the job, e.g. module load)
#   unset                                         the python on PATH, which sbatch exports from the
#                                                 submitting shell (its activated environment)
# `export PYTHON_ENV=...` before sbatch works as well.
if [[ -n "${PYTHON_ENV:-}" ]]; then
    set +u # activation scripts read unset variables
    if [[ -f "${PYTHON_ENV}/bin/activate" ]]; then
        # shellcheck source=/dev/null
        source "${PYTHON_ENV}/bin/activate"
    elif command -v conda >/dev/null; then
        eval "$(conda shell.bash hook)"
        conda activate "${PYTHON_ENV}"
    else
        echo "PYTHON_ENV=${PYTHON_ENV} is neither a virtualenv (no bin/activate) nor, without conda on PATH, a conda environment" >&2
        exit 1
    fi
    set -u
fi
echo "python: $(command -v python) ($(python --version 2>&1))"

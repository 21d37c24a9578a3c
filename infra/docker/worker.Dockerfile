# The Prefect worker image: recops and its engines installed, code pulled per run by the
# prefect.yaml pull steps (git_clone), so a new commit needs no new image; a dependency
# change does. Build from the repo root: docker build -f infra/docker/worker.Dockerfile .
FROM python:3.11-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends git \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/recops
COPY pyproject.toml constraints.txt README.md ./
COPY components ./components
COPY flows ./flows
COPY services ./services
COPY benchmarks ./benchmarks
# CPU torch by default; for GPU workers install the CUDA wheel index first.
RUN pip install --no-cache-dir -c constraints.txt -e ".[scale]"
ENV RECOPS_HOME=/var/lib/recops DVC_NO_ANALYTICS=1 DO_NOT_TRACK=1
CMD ["prefect", "worker", "start", "--pool", "recops-process", "--type", "process"]

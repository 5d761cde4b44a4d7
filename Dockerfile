# apogeenet in a container: the pinned stack with the CPU build of torch.
# Build: docker build -t apogeenet .   Run: docker run --rm apogeenet apogeenet --help
# (Not built in this project's CI, which has no Docker engine.)
FROM python:3.11-slim
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLFLOW_DISABLE_TELEMETRY=true PREFECT_SERVER_ANALYTICS_ENABLED=false DVC_NO_ANALYTICS=1
WORKDIR /app
COPY requirements/constraints.txt requirements/constraints.txt
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY pyproject.toml README.md ./
COPY apogeenet apogeenet
COPY expectations expectations
COPY flows flows
RUN pip install -c requirements/constraints.txt .
ENTRYPOINT []
CMD ["apogeenet", "--help"]

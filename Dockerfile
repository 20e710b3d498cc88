# The detector alone (`rationanomaly run`); docker-compose.yml adds Kafka and vLLM around it.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# CPU-only torch: in this image the model runs behind vLLM's OpenAI API, and torch is needed only
# by the in-process transformers backend, so the multi-GB CUDA wheels would be dead weight.
# Override with --build-arg TORCH_INDEX_URL=https://pypi.org/simple for the CUDA build.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --index-url "$TORCH_INDEX_URL" torch

WORKDIR /src
COPY pyproject.toml README.md ./
COPY cli ./cli
COPY stream ./stream
COPY model ./model
COPY training ./training
RUN pip install . && rm -rf /src

RUN useradd --system --uid 10001 --create-home rationanomaly \
    && mkdir -p /var/lib/rationanomaly \
    && chown rationanomaly /var/lib/rationanomaly
USER rationanomaly
WORKDIR /home/rationanomaly

# Prometheus metrics (RATIONANOMALY_METRICS__PORT).
EXPOSE 9108
ENTRYPOINT ["rationanomaly", "run"]

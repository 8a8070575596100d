# The broker as a container image. Build: docker build -t broker .
# Run:  docker run -p 8000:8000 -v broker-data:/var/lib/broker broker
# Multi-stage: the build stage installs the package; the final stage has no compiler, no pip
# cache and no source tree, runs as uid/gid 10001 (numeric, so Kubernetes' runAsNonRoot can
# check it) and works with a read-only root filesystem (it writes only to the data directory
# and /tmp). deploy/helm/broker and deploy/compose*.yaml run it.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY broker ./broker
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
LABEL org.opencontainers.image.title="broker" \
      org.opencontainers.image.description="Federation identity broker speaking AWS's STS, IAM and SigV4" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 broker \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/broker \
       --shell /usr/sbin/nologin broker \
    && mkdir -p /var/lib/broker && chown broker:broker /var/lib/broker && chmod 0700 /var/lib/broker
COPY --from=build /install /usr/local
USER 10001:10001
ENV BROKER_SERVER_DATA_DIR=/var/lib/broker \
    BROKER_SERVER_HOST=0.0.0.0 \
    BROKER_SERVER_PORT=8000 \
    PYTHONUNBUFFERED=1
WORKDIR /var/lib/broker
EXPOSE 8000
VOLUME ["/var/lib/broker"]
# uvicorn finishes the requests in flight on SIGTERM (server.shutdown_timeout_seconds), then
# the broker exits 0: give `docker stop` a longer --time than that timeout.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2)"]
ENTRYPOINT ["broker"]
CMD ["serve"]

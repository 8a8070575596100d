# The broker as a container image. Build: docker build -t broker .
# Run:  docker run -p 8000:8000 -v broker-data:/var/lib/broker broker
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY broker ./broker
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/broker --shell /usr/sbin/nologin broker \
    && mkdir -p /var/lib/broker && chown broker:broker /var/lib/broker && chmod 0700 /var/lib/broker
COPY --from=build /install /usr/local
USER broker
ENV BROKER_SERVER_DATA_DIR=/var/lib/broker \
    BROKER_SERVER_HOST=0.0.0.0 \
    BROKER_SERVER_PORT=8000 \
    PYTHONUNBUFFERED=1
EXPOSE 8000
VOLUME ["/var/lib/broker"]
HEALTHCHECK --interval=10s --timeout=3s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2)"]
ENTRYPOINT ["broker"]
CMD ["serve"]

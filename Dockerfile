FROM python:3.11-slim
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway gateway
COPY hl7v2 hl7v2
COPY mappings mappings
COPY routes routes
COPY simulators simulators
COPY dicomext dicomext
COPY config config
RUN pip install --no-cache-dir . && mkdir -p /etc/dxa-gateway /var/lib/dxa-gateway \
    && cp config/docker.yaml /etc/dxa-gateway/gateway.yaml
VOLUME /var/lib/dxa-gateway
EXPOSE 11112 2575 8080
HEALTHCHECK CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz').status != 200)"
STOPSIGNAL SIGTERM
CMD ["dxa-gateway", "run", "--config", "/etc/dxa-gateway/gateway.yaml"]

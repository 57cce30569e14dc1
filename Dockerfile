# metricsd container image: built with the official Swift image, run on Debian slim as a non-root user.
#   docker build -t metricsd:0.2.0 .
#   docker run --rm -p 8089:8089/udp -p 8094:8094 -p 8186:8186 metricsd:0.2.0
# The Kubernetes manifests in deploy/kubernetes use this image (docs/scaling.md).

ARG SWIFT_IMAGE=swift:6.3-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${SWIFT_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libcurl4-openssl-dev libsqlite3-dev zlib1g-dev libdeflate-dev libre2-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Package.swift ./
COPY Sources ./Sources
COPY Tests ./Tests
# The Swift runtime and Foundation linked in (checked with ldd): the runtime image needs libcurl, libsqlite3, zlib, libdeflate,
# libre2 and libstdc++ only.
RUN swift build -c release --static-swift-stdlib --product metricsd \
 && install -D -m 0755 "$(swift build -c release --show-bin-path)/metricsd" /out/usr/bin/metricsd
COPY metricsd.example.toml /out/etc/metricsd/metricsd.toml
COPY grafana /out/usr/share/metricsd/grafana

FROM ${RUNTIME_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends libcurl4 libsqlite3-0 zlib1g libdeflate0 libre2-9 libstdc++6 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 metricsd \
 && useradd --system --uid 10001 --gid metricsd --home-dir /var/lib/metricsd --shell /usr/sbin/nologin metricsd \
 && install -d -o metricsd -g metricsd -m 0750 /var/lib/metricsd
COPY --from=build /out/ /
USER 10001:10001
VOLUME ["/var/lib/metricsd"]
EXPOSE 8089/udp 8094/tcp 8186/tcp
# Listen on every interface inside the container; the configuration file may say otherwise.
ENTRYPOINT ["/usr/bin/metricsd"]
CMD ["serve", "--config", "/etc/metricsd/metricsd.toml", "--data-dir", "/var/lib/metricsd", \
     "--udp", "0.0.0.0:8089", "--tcp", "0.0.0.0:8094", "--http", "0.0.0.0:8186"]

# icebox container image: one static binary on distroless, running as nonroot.
#
#   docker build --build-arg VERSION="$(git describe --tags --always --dirty)" -t icebox .
#
# Run it with host networking (recommended for a TURN relay):
#
#   docker run -d --name icebox --network host --stop-timeout 90 \
#     -v icebox-state:/var/lib/icebox \
#     -e ICEBOX_HTTP_LISTEN=127.0.0.1:8080 \
#     -e ICEBOX_TURN_RELAY_PUBLIC_IP=<this host's public IP if behind 1:1 NAT> \
#     icebox
#
# The relay port range: every TURN allocation gets its own UDP port from
# turn.relay.min_port..max_port (default 49152-65535), and clients send media
# straight to it. Two ways to reach those ports:
#
#  * --network host (recommended): no NAT between the relay and its clients,
#    no docker-proxy process or iptables rule per port, the whole default
#    range usable, and relays advertise the host's real address.
#  * bridge networking: publish a narrow range and tell icebox to use exactly
#    that range and to advertise the host's public IP (inside the container
#    the only address is a private 172.x one that clients cannot reach):
#
#      docker run -d --name icebox --stop-timeout 90 \
#        -p 3478:3478/udp -p 3478:3478/tcp -p 5349:5349/tcp \
#        -p 127.0.0.1:8080:8080/tcp \
#        -p 49152-49200:49152-49200/udp \
#        -e ICEBOX_TURN_RELAY_MIN_PORT=49152 -e ICEBOX_TURN_RELAY_MAX_PORT=49200 \
#        -e ICEBOX_TURN_RELAY_PUBLIC_IP=<the host's public IP> \
#        -v icebox-state:/var/lib/icebox icebox
#
#    49 ports = at most 49 simultaneous allocations (about 24 relayed calls);
#    a much larger range makes Docker slow to start the container.
#
# --stop-timeout 90: on SIGTERM icebox drains live allocations for up to
# drain_timeout (60s); Docker's default of 10s would SIGKILL it mid-drain.
# A configuration file, if any, goes to /etc/icebox/icebox.yaml
# (-v /srv/icebox/icebox.yaml:/etc/icebox/icebox.yaml:ro); without one icebox
# uses its defaults plus ICEBOX_* variables. See docs/deploy.md.

# --- build -------------------------------------------------------------------
# golang:1.26-bookworm: the Go release go.mod asks for (1.26), on Debian 12
# (bookworm), the distribution the project is developed and tested on. The
# binary is static (CGO_ENABLED=0: goolm is the pure-Go Olm, the SQLite
# driver is pure Go), so the builder's libc never reaches the final image.
FROM golang:1.26-bookworm AS build
WORKDIR /src
# Modules first: this layer is rebuilt only when go.mod or go.sum change.
COPY go.mod go.sum ./
# go.mod replaces pion/stun with this patched copy (third_party/README.md).
COPY third_party ./third_party
RUN go mod download
COPY . .
# VERSION is what `icebox version` prints; the Makefile passes `git describe`.
ARG VERSION=dev
# The same flags as `make build`, plus -s -w (no symbol table: smaller image).
RUN CGO_ENABLED=0 go build -tags goolm -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/icebox ./cmd/icebox
# The state directory, created here so the final image can own it by nonroot
# (distroless has no shell to mkdir/chown with); a named volume mounted there
# starts with this ownership.
RUN mkdir -p /out/state

# --- run ---------------------------------------------------------------------
# distroless static: CA certificates, tzdata, /etc/passwd with nonroot
# (65532), no shell, no package manager.
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
LABEL org.opencontainers.image.title="icebox" \
      org.opencontainers.image.description="TURN/STUN relay with per-call credentials and call signaling" \
      org.opencontainers.image.source="https://github.com/icebox-voip/icebox" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/icebox /usr/local/bin/icebox
COPY --from=build --chown=65532:65532 /out/state /var/lib/icebox
USER nonroot
# icebox.db and the generated secret (secrets/k1): keep them across
# upgrades. A bind mount must be writable by uid 65532
# (chown 65532:65532 /srv/icebox/state).
VOLUME /var/lib/icebox
# Inside a container, loopback is the container's own: the API must listen
# on every interface to be reachable through -p. With --network host, set
# ICEBOX_HTTP_LISTEN=127.0.0.1:8080 so the unauthenticated /metrics is not
# public.
ENV ICEBOX_STATE_DIR=/var/lib/icebox \
    ICEBOX_HTTP_LISTEN=0.0.0.0:8080
# TURN/STUN UDP and TCP, TURN over TLS (turn.listen.tls, needs turn.tls),
# HTTP API and /metrics. The relay range is not listed: see above.
EXPOSE 3478/udp 3478/tcp 5349/tcp 8080/tcp
# GET /readyz on http.listen (ICEBOX_HTTP_LISTEN); unhealthy while starting
# or draining. No shell in the image, so icebox asks itself. With http.tls
# (HTTPS), override it in exec form with
# ["/usr/local/bin/icebox","health","--insecure","--url","https://127.0.0.1:8080/readyz"].
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["/usr/local/bin/icebox", "health"]
ENTRYPOINT ["/usr/local/bin/icebox"]
CMD ["serve"]

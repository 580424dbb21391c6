# syntax=docker/dockerfile:1
# The DeeperSensor API image: a static binary on a distroless base with no shell, run as nobody (65534).
# Build with `docker build -t deepersensor .`; compose.yaml builds it for the api1 and api2 services.

FROM golang:1.26-bookworm AS build
WORKDIR /src
# The module download is its own layer, rebuilt only when go.mod or go.sum change.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags="-s -w" -o /out/deepersensor ./cmd/deepersensor

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/deepersensor /deepersensor
USER 65534:65534
ENV DS_ENV=production DS_HTTP_ADDR=0.0.0.0:8080
EXPOSE 8080
# The binary is its own probe: the image has no shell or curl.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 CMD ["/deepersensor", "healthcheck"]
ENTRYPOINT ["/deepersensor"]

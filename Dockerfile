# syntax=docker/dockerfile:1
# Static build, the same flags as `make build`; a distroless, non-root image.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
RUN CGO_ENABLED=0 go build -trimpath -tags grpcnotrace \
      -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" \
      -o /out/sidekey ./cmd/sidekey

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/sidekey /usr/local/bin/sidekey
USER nonroot:nonroot
EXPOSE 8080 9901
ENTRYPOINT ["/usr/local/bin/sidekey"]
CMD ["run", "-c", "/etc/sidekey/sidekey.yaml"]

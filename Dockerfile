# syntax=docker/dockerfile:1
# cerbos-forwardauth: the ForwardAuth decision service.
#
#   docker build -t cerbos-forwardauth:0.1.0 .
#   docker run --rm -p 8080:8080 -v "$PWD/config.yaml:/etc/cerbos-forwardauth/config.yaml:ro" cerbos-forwardauth:0.1.0
#
# The config must listen on 0.0.0.0 (not 127.0.0.1) to be reachable from outside the container,
# and keep the admin listener on port 9090 for the HEALTHCHECK below.
#
# The image includes the packaged Cerbos binary (the optional dependency @cerbos/cerbos-linux-x64,
# installed on x64 builds), so pdp.embedded works too — e.g. the quickstart:
#   docker run --rm -p 8080:8080 -e LISTEN=0.0.0.0:8080 -e ADMIN_LISTEN=0.0.0.0:9090 \
#     cerbos-forwardauth:0.1.0 --config /app/examples/quickstart/config.yaml
# Embedded mode starts the binary through setpriv (util-linux, part of bookworm-slim).
# For a separate PDP (pdp.address), the binary is unused.

# ---- build: compile TypeScript ----------------------------------------------------------------
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
# Produces dist/src/cli.js (package.json "bin").
RUN npm run build

# ---- runtime: production dependencies and the compiled code only --------------------------------
FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
# --omit=dev keeps optional dependencies (the Cerbos binary package).
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist/src ./dist/src
COPY examples/quickstart ./examples/quickstart

# The unprivileged "node" user of the node images, by number so that Kubernetes
# runAsNonRoot can verify it.
USER 1000:1000

# ForwardAuth listener, admin listener (/healthz /readyz /metrics /cache/purge).
EXPOSE 8080 9090

# No curl in slim images: Node's fetch asks the admin listener.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:9090/healthz',{signal:AbortSignal.timeout(2000)}).then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]

ENTRYPOINT ["node", "dist/src/cli.js"]
CMD ["--config", "/etc/cerbos-forwardauth/config.yaml"]

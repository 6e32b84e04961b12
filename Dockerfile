# berth: one image for both programs (`berth control-plane`, `berth proxy`, `berth up`).
# Node 20 is pinned: the uWebSockets.js binaries stop at Node 20 (ABI 115); see README.
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# install scripts skipped: `prepare` needs the sources (built below) and the embedded Postgres
# download is not needed here (the compose stack runs a real Postgres)
RUN npm ci --no-audit --no-fund --ignore-scripts
COPY tsconfig.json ./
COPY bin bin
COPY shared shared
COPY proxy proxy
COPY control-plane control-plane
COPY bench bench
RUN npx tsc -p tsconfig.json && npm prune --omit=dev --ignore-scripts

FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules node_modules
COPY --from=build /app/dist dist
COPY --from=build /app/bin bin
# The control plane talks to the Docker socket that compose mounts, which needs root here.
VOLUME ["/data"]
ENV BERTH_DATA_DIR=/data
ENTRYPOINT ["node", "--", "bin/berth.js"]
CMD ["--help"]

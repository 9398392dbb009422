# One image for both roles; the command picks coordinator or node.
FROM node:22-bookworm-slim
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund
COPY bin ./bin
COPY cli ./cli
COPY protocols ./protocols
COPY models ./models
COPY coordinator ./coordinator
COPY client-node ./client-node
COPY data ./data
ENV NODE_ENV=production
# Mount points of the named volumes (coordinator keys, node state) and the default .fedmark folder
# must exist and belong to `node` in the image: Docker seeds an empty named volume from the image's
# folder, owner included. Created at mount time instead, they would be root's, and the first key
# or credential write would fail with EACCES.
RUN mkdir -p /keys /state /app/.fedmark && chown node:node /keys /state /app/.fedmark && chmod 0700 /keys /state
USER node
ENTRYPOINT ["node", "bin/fedmark.js"]
CMD ["--help"]

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
USER node
ENTRYPOINT ["node", "bin/fedmark.js"]
CMD ["--help"]

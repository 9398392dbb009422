// Line charts over rounds with uPlot (loaded as a classic script: window.uPlot). A chart is
// rebuilt when its data change; uPlot sizes itself from the container.

const charts = new Map();

/**
 * Draws `series` (each { label, values, stroke, points }) against `rounds` in the element `id`;
 * a series with `pointsOnly` is drawn as markers (the noised evaluations).
 */
export function lineChart(id, rounds, series, { yLabel } = {}) {
  const container = document.getElementById(id);
  charts.get(id)?.destroy();
  charts.delete(id);
  container.replaceChildren();
  if (!window.uPlot || rounds.length === 0) return;
  const width = Math.max(320, container.clientWidth || 600);
  const opts = {
    width,
    height: 220,
    scales: { x: { time: false } },
    // Rounds are whole numbers: ticks and grid lines only on them.
    axes: [{ label: 'round', incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000] }, { label: yLabel, size: 60 }],
    series: [
      { label: 'round' },
      ...series.map((s) => ({
        label: s.label,
        stroke: s.stroke,
        width: s.pointsOnly ? 0 : 2,
        points: { show: true, size: s.pointsOnly ? 11 : 5, stroke: s.stroke, fill: s.pointsOnly ? '#fff' : s.stroke },
        ...(s.pointsOnly ? { paths: () => null } : {}),
      })),
    ],
  };
  charts.set(id, new window.uPlot(opts, [rounds, ...series.map((s) => s.values)], container));
}

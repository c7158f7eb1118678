// Small DOM and formatting helpers. Text only ever goes in through textContent.

// A new element with properties (className, type, ...; ariaLabel becomes aria-label).
export function el(tag, props) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (name === 'ariaLabel') node.setAttribute('aria-label', value);
    else if (name === 'role') node.setAttribute('role', value);
    else node[name] = value;
  }
  return node;
}

// Set a node's text only when it changed (no needless layout work).
export function setText(node, text) {
  const value = text === null || text === undefined ? '' : String(text);
  if (node.textContent !== value) node.textContent = value;
}

// Tenths of a second under 10 s for an ended session; a running one moves on once a
// second, so it shows whole seconds (no precision it does not have).
export function formatElapsed(ms, running) {
  const s = Math.floor(ms / 1000);
  if (s < 60) return s < 10 && !running ? `${(ms / 1000).toFixed(1)} s` : `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, '0')}m`;
}

export function formatTokens(n) {
  if (!n) return '0';
  if (n < 1000) return String(n);
  if (n < 1e6) return `${(n / 1000).toFixed(n < 10000 ? 1 : 0)}k`;
  return `${(n / 1e6).toFixed(1)}M`;
}

export function formatCost(usd) {
  if (typeof usd !== 'number') return '–';
  if (usd === 0) return '$0';
  if (usd < 0.01) return `$${usd.toPrecision(2)}`;
  return `$${usd.toFixed(2)}`;
}

export function formatTime(ms) {
  return ms ? new Date(ms).toLocaleString() : '';
}

export function ago(ms) {
  if (!ms) return '';
  return `${formatElapsed(Math.max(0, Date.now() - ms), true)} ago`;
}

// The RTP figures both test pages report (element.html and icebox.html load
// this before their own script), so the two sides are measured alike.
'use strict';

// rtpStats sums getStats(): inbound RTP bytes per kind (and per m-line),
// outbound bytes, the selected candidate pair.
globalThis.rtpStats = async function rtpStats(pc) {
  const out = { audioBytesIn: 0, videoBytesIn: 0, bytesOut: 0, framesDecoded: 0, audioEnergy: 0, inbound: [], local: null, remote: null };
  if (!pc || pc.connectionState === 'closed') return out;
  const stats = await pc.getStats();
  let pair = null;
  stats.forEach((s) => {
    if (s.type === 'inbound-rtp') {
      out[s.kind === 'video' ? 'videoBytesIn' : 'audioBytesIn'] += s.bytesReceived || 0;
      out.inbound.push({ kind: s.kind, mid: s.mid || '', bytes: s.bytesReceived || 0 });
      out.framesDecoded += s.framesDecoded || 0;
      out.audioEnergy += s.totalAudioEnergy || 0;
    }
    if (s.type === 'outbound-rtp') out.bytesOut += s.bytesSent || 0;
    if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
  });
  if (pair) {
    const l = stats.get(pair.localCandidateId), r = stats.get(pair.remoteCandidateId);
    if (l) out.local = { type: l.candidateType, address: l.address, port: l.port, relayProtocol: l.relayProtocol || '' };
    if (r) out.remote = { type: r.candidateType, address: r.address, port: r.port };
  }
  return out;
};

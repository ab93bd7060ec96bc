// Minimal, defensive reading of the few SOAP leaf values Xiaoan needs from WS-Discovery replies and
// (in the simulator) from requests. Refuses DOCTYPEs outright (no entity expansion, no external
// entities) and caps the size before looking at anything.
export const MAX_SOAP_BYTES = 256 * 1024;

export class XmlRefused extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'XmlRefused';
  }
}

/** Throws XmlRefused for oversize input or any DTD (entity expansion, external entities). */
export function checkXml(xml: string, max = MAX_SOAP_BYTES): void {
  if (Buffer.byteLength(xml) > max) throw new XmlRefused(`XML of ${Buffer.byteLength(xml)} bytes exceeds the ${max}-byte limit`);
  if (/<!DOCTYPE|<!ENTITY/i.test(xml)) throw new XmlRefused('XML with a DOCTYPE or ENTITY declaration is refused (entity expansion / external entities)');
}

const decode = (s: string) =>
  s.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&apos;/g, "'").replace(/&amp;/g, '&');

export function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** Text of every element with this local name (any namespace prefix), in document order. */
export function leafTexts(xml: string, local: string): string[] {
  const re = new RegExp(`<(?:[\\w.-]+:)?${local}(?:\\s[^>]*)?>([^<]*)</(?:[\\w.-]+:)?${local}>`, 'g');
  const out: string[] = [];
  for (const m of xml.matchAll(re)) out.push(decode(m[1]!.trim()));
  return out;
}

export function leafText(xml: string, local: string): string | undefined {
  return leafTexts(xml, local)[0];
}

/** Local name of the first element inside the SOAP Body (the operation), e.g. GetProfiles. */
export function soapOperation(xml: string): string | undefined {
  return /<(?:[\w.-]+:)?Body[^>]*>\s*<(?:[\w.-]+:)?([A-Za-z]+)/.exec(xml)?.[1];
}

//! Content types from magic bytes and file names, and cheap image dimensions.
//!
//! Everything here reads only the first bytes of a file (`head`, a few KiB are plenty) and
//! never panics, whatever those bytes are or wherever they are cut.
//!
//! SVG is deliberately never recognised: an SVG image is an XML document that can carry
//! scripts and links, so it is bridged as a plain file (not shown inline as an image, and
//! [`kind_of`] calls `image/svg+xml` a [`Kind::File`]).

/// What a client shows a file as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Image,
    Video,
    Audio,
    File,
}

/// The kind of file a MIME type names: `image/*` (but SVG) an image, `video/*` a video,
/// `audio/*` audio, anything else a file.
pub fn kind_of(mime: &str) -> Kind {
    let mime = essence(mime);
    let Some((top, sub)) = mime.split_once('/') else {
        return Kind::File;
    };
    if top.eq_ignore_ascii_case("image") {
        if sub.to_ascii_lowercase().starts_with("svg") {
            Kind::File
        } else {
            Kind::Image
        }
    } else if top.eq_ignore_ascii_case("video") {
        Kind::Video
    } else if top.eq_ignore_ascii_case("audio") {
        Kind::Audio
    } else {
        Kind::File
    }
}

/// The type and subtype of a MIME type, without parameters (`audio/ogg; codecs=opus` →
/// `audio/ogg`) or surrounding spaces.
fn essence(mime: &str) -> &str {
    mime.split(';').next().unwrap_or(mime).trim()
}

fn get<const N: usize>(head: &[u8], at: usize) -> Option<[u8; N]> {
    let end = at.checked_add(N)?;
    head.get(at..end)?.try_into().ok()
}

fn u16_be(head: &[u8], at: usize) -> Option<u16> {
    get(head, at).map(u16::from_be_bytes)
}

fn u16_le(head: &[u8], at: usize) -> Option<u16> {
    get(head, at).map(u16::from_le_bytes)
}

fn u32_be(head: &[u8], at: usize) -> Option<u32> {
    get(head, at).map(u32::from_be_bytes)
}

fn u32_le(head: &[u8], at: usize) -> Option<u32> {
    get(head, at).map(u32::from_le_bytes)
}

fn u24_le(head: &[u8], at: usize) -> Option<u32> {
    get::<3>(head, at).map(|[a, b, c]| u32::from_le_bytes([a, b, c, 0]))
}

/// The MIME type of a file from its first bytes (magic numbers), or `None` if unknown.
///
/// Recognised: JPEG, PNG, GIF, WebP, BMP, HEIC/HEIF/AVIF, MP4/M4V/MOV/M4A/3GP (ISO BMFF brands),
/// WebM/Matroska, Ogg (always `audio/ogg`; see [`is_ogg_opus`]), MP3 (ID3 tag or MPEG audio
/// frame), AAC (ADTS), WAV, AVI, FLAC, PDF and ZIP (which includes Office documents and APKs).
pub fn sniff(head: &[u8]) -> Option<&'static str> {
    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n";
    if head.starts_with(b"\xff\xd8\xff") {
        return Some("image/jpeg");
    }
    if head.starts_with(PNG) {
        return Some("image/png");
    }
    if head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a") {
        return Some("image/gif");
    }
    if head.starts_with(b"RIFF") {
        return match head.get(8..12)? {
            b"WEBP" => Some("image/webp"),
            b"WAVE" => Some("audio/wav"),
            b"AVI " => Some("video/x-msvideo"),
            _ => None,
        };
    }
    if head.get(4..8) == Some(&b"ftyp"[..]) {
        return sniff_ftyp(head);
    }
    if head.starts_with(b"\x1a\x45\xdf\xa3") {
        return Some(sniff_ebml(head));
    }
    if head.starts_with(b"OggS") {
        return Some("audio/ogg");
    }
    if head.starts_with(b"fLaC") {
        return Some("audio/flac");
    }
    if head.starts_with(b"%PDF-") {
        return Some("application/pdf");
    }
    if head.starts_with(b"PK\x03\x04")
        || head.starts_with(b"PK\x05\x06")
        || head.starts_with(b"PK\x07\x08")
    {
        return Some("application/zip");
    }
    if head.starts_with(b"ID3") {
        return Some("audio/mpeg");
    }
    if let Some(mime) = sniff_mpeg_audio(head) {
        return Some(mime);
    }
    if is_bmp(head) {
        return Some("image/bmp");
    }
    None
}

/// ISO base media files: the major brand, else the first compatible brand we know.
fn sniff_ftyp(head: &[u8]) -> Option<&'static str> {
    fn brand(b: &[u8]) -> Option<&'static str> {
        Some(match b {
            b"avif" | b"avis" => "image/avif",
            b"heic" | b"heix" | b"heim" | b"heis" | b"hevc" | b"hevx" => "image/heic",
            b"mif1" | b"msf1" => "image/heif",
            b"M4A " | b"M4B " | b"M4P " => "audio/mp4",
            b"qt  " => "video/quicktime",
            b"3gp4" | b"3gp5" | b"3gp6" | b"3gp7" | b"3gs7" | b"3ge6" | b"3ge7" | b"3gg6" => {
                "video/3gpp"
            }
            b"3g2a" | b"3g2b" | b"3g2c" => "video/3gpp2",
            b"isom" | b"iso2" | b"iso3" | b"iso4" | b"iso5" | b"iso6" | b"mp41" | b"mp42"
            | b"mp71" | b"avc1" | b"dash" | b"MSNV" | b"M4V " | b"M4VH" | b"M4VP" | b"f4v "
            | b"NDAS" => "video/mp4",
            _ => return None,
        })
    }
    let size = usize::try_from(u32_be(head, 0)?).ok()?;
    let major = brand(head.get(8..12)?);
    // Compatible brands follow the minor version, up to the box's end (as far as we have it).
    let end = size.clamp(16, 16 + 4 * 64).min(head.len());
    let compatible = || {
        head.get(16..end)
            .unwrap_or_default()
            .chunks_exact(4)
            .filter_map(brand)
    };
    match major {
        // HEIF's generic brand: AVIF or HEIC when a compatible brand says so.
        Some("image/heif") => Some(
            compatible()
                .find(|m| matches!(*m, "image/avif" | "image/heic"))
                .unwrap_or("image/heif"),
        ),
        Some(mime) => Some(mime),
        None => compatible().next(),
    }
}

/// EBML: WebM when the DocType says so, Matroska otherwise.
fn sniff_ebml(head: &[u8]) -> &'static str {
    let header = &head[..head.len().min(64)];
    // DocType element (0x42 0x82), a one-byte size, then the name.
    let doc_type = header
        .windows(2)
        .position(|w| w == [0x42, 0x82])
        .and_then(|at| header.get(at + 3..));
    match doc_type {
        Some(name) if name.starts_with(b"webm") => "video/webm",
        _ => "video/x-matroska",
    }
}

/// An MPEG audio frame header (MP3 and its layers) or an ADTS header (AAC).
fn sniff_mpeg_audio(head: &[u8]) -> Option<&'static str> {
    let [b0, b1, b2, _] = get::<4>(head, 0)?;
    if b0 != 0xff || b1 & 0xe0 != 0xe0 {
        return None;
    }
    let version = (b1 >> 3) & 3;
    let layer = (b1 >> 1) & 3;
    if layer == 0 {
        // ADTS: MPEG-4/MPEG-2 AAC, layer always 0, sampling index below 13.
        return (b1 & 0xf6 == 0xf0 && (b2 >> 2) & 0xf < 13).then_some("audio/aac");
    }
    let bitrate = b2 >> 4;
    let rate = (b2 >> 2) & 3;
    (version != 1 && bitrate != 0xf && rate != 3).then_some("audio/mpeg")
}

/// BMP: `BM`, then a known DIB header size at offset 14 (the two letters alone are too weak).
fn is_bmp(head: &[u8]) -> bool {
    head.starts_with(b"BM") && matches!(u32_le(head, 14), Some(12 | 40 | 52 | 56 | 64 | 108 | 124))
}

/// Whether an Ogg file's first page carries an Opus identification header (`OpusHead`), as
/// voice messages do.
pub fn is_ogg_opus(head: &[u8]) -> bool {
    // Page header: "OggS", version 0, flags, granule (8), serial (4), sequence (4),
    // CRC (4), segment count at 26, then the segment table and the payload.
    if !head.starts_with(b"OggS") || head.get(4) != Some(&0) {
        return false;
    }
    let Some(&segments) = head.get(26) else {
        return false;
    };
    let payload = 27 + usize::from(segments);
    head.get(payload..)
        .is_some_and(|rest| rest.starts_with(b"OpusHead"))
}

/// The MIME type for a file name's extension (case-insensitive), or `None`.
///
/// `.svg` gives `None` on purpose (see the module documentation), so it is sent as a file.
pub fn from_extension(name: &str) -> Option<&'static str> {
    let (_, ext) = name.rsplit_once('.')?;
    if ext.is_empty() || ext.len() > 5 || ext.contains(['/', '\\']) {
        return None;
    }
    let ext = ext.to_ascii_lowercase();
    Some(match ext.as_str() {
        "jpg" | "jpeg" | "jpe" | "jfif" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "bmp" => "image/bmp",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "avif" => "image/avif",
        "mp4" | "m4v" => "video/mp4",
        "mov" | "qt" => "video/quicktime",
        "webm" => "video/webm",
        "mkv" => "video/x-matroska",
        "3gp" => "video/3gpp",
        "avi" => "video/x-msvideo",
        "m4a" => "audio/mp4",
        "ogg" | "oga" | "opus" => "audio/ogg",
        "mp3" => "audio/mpeg",
        "aac" => "audio/aac",
        "wav" => "audio/wav",
        "flac" => "audio/flac",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "txt" => "text/plain",
        _ => return None,
    })
}

/// The usual file extension (without the dot) for a MIME type (parameters and case ignored),
/// or `None`.
pub fn extension_for(mime: &str) -> Option<&'static str> {
    let mime = essence(mime).to_ascii_lowercase();
    Some(match mime.as_str() {
        "image/jpeg" | "image/jpg" | "image/pjpeg" => "jpg",
        "image/png" => "png",
        "image/gif" => "gif",
        "image/webp" => "webp",
        "image/bmp" | "image/x-ms-bmp" => "bmp",
        "image/heic" | "image/heic-sequence" => "heic",
        "image/heif" | "image/heif-sequence" => "heif",
        "image/avif" => "avif",
        "video/mp4" => "mp4",
        "video/quicktime" => "mov",
        "video/webm" => "webm",
        "video/x-matroska" => "mkv",
        "video/3gpp" => "3gp",
        "video/3gpp2" => "3g2",
        "video/x-msvideo" => "avi",
        "audio/mp4" | "audio/m4a" | "audio/x-m4a" => "m4a",
        "audio/ogg" | "application/ogg" => "ogg",
        "audio/opus" => "opus",
        "audio/mpeg" | "audio/mp3" => "mp3",
        "audio/aac" | "audio/x-aac" | "audio/aacp" => "aac",
        "audio/wav" | "audio/wave" | "audio/x-wav" | "audio/vnd.wave" => "wav",
        "audio/flac" | "audio/x-flac" => "flac",
        "application/pdf" => "pdf",
        "application/zip" => "zip",
        "text/plain" => "txt",
        _ => return None,
    })
}

/// Width and height of an image from its first bytes: PNG (IHDR), GIF (logical screen), JPEG
/// (the first start-of-frame marker within `head`) and WebP (`VP8 `, `VP8L`, `VP8X`).
///
/// `None` for other types, when the bytes do not match `mime`, or when the header lies beyond
/// `head`. The JPEG size is the coded one: an EXIF rotation is not applied.
pub fn dimensions(mime: &str, head: &[u8]) -> Option<(u32, u32)> {
    let mime = essence(mime).to_ascii_lowercase();
    let (w, h) = match mime.as_str() {
        "image/png" => png_dimensions(head)?,
        "image/gif" => gif_dimensions(head)?,
        "image/jpeg" | "image/jpg" | "image/pjpeg" => jpeg_dimensions(head)?,
        "image/webp" => webp_dimensions(head)?,
        _ => return None,
    };
    (w > 0 && h > 0).then_some((w, h))
}

fn png_dimensions(head: &[u8]) -> Option<(u32, u32)> {
    if !head.starts_with(b"\x89PNG\r\n\x1a\n") || head.get(12..16)? != b"IHDR" {
        return None;
    }
    Some((u32_be(head, 16)?, u32_be(head, 20)?))
}

fn gif_dimensions(head: &[u8]) -> Option<(u32, u32)> {
    if !head.starts_with(b"GIF87a") && !head.starts_with(b"GIF89a") {
        return None;
    }
    Some((u16_le(head, 6)?.into(), u16_le(head, 8)?.into()))
}

fn jpeg_dimensions(head: &[u8]) -> Option<(u32, u32)> {
    if !head.starts_with(b"\xff\xd8") {
        return None;
    }
    let mut at = 2;
    loop {
        if *head.get(at)? != 0xff {
            return None;
        }
        // Any number of 0xff fill bytes may precede a marker.
        while *head.get(at + 1)? == 0xff {
            at += 1;
        }
        let marker = *head.get(at + 1)?;
        match marker {
            // Markers without a length: TEM, RSTn, SOI.
            0x01 | 0xd0..=0xd8 => {
                at += 2;
                continue;
            }
            // End of image, or start of scan: no frame header before it.
            0xd9 | 0xda => return None,
            _ => {}
        }
        let len = usize::from(u16_be(head, at + 2)?);
        if len < 2 {
            return None;
        }
        // SOFn: every 0xc0..=0xcf but DHT (c4), JPG (c8) and DAC (cc).
        if (0xc0..=0xcf).contains(&marker) && !matches!(marker, 0xc4 | 0xc8 | 0xcc) {
            // Length, precision, height, width.
            let height = u16_be(head, at + 5)?;
            let width = u16_be(head, at + 7)?;
            return Some((width.into(), height.into()));
        }
        at += 2 + len;
    }
}

fn webp_dimensions(head: &[u8]) -> Option<(u32, u32)> {
    if !head.starts_with(b"RIFF") || head.get(8..12)? != b"WEBP" {
        return None;
    }
    match head.get(12..16)? {
        b"VP8 " => {
            // Frame tag (3 bytes), start code, then 14-bit width and height (2 scale bits).
            if head.get(23..26)? != [0x9d, 0x01, 0x2a] {
                return None;
            }
            let w = u16_le(head, 26)? & 0x3fff;
            let h = u16_le(head, 28)? & 0x3fff;
            Some((w.into(), h.into()))
        }
        b"VP8L" => {
            if *head.get(20)? != 0x2f {
                return None;
            }
            let bits = u32_le(head, 21)?;
            Some(((bits & 0x3fff) + 1, ((bits >> 14) & 0x3fff) + 1))
        }
        b"VP8X" => {
            // Flags (4 bytes), then canvas width − 1 and height − 1, 24 bits each.
            Some((u24_le(head, 24)? + 1, u24_le(head, 27)? + 1))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, RngExt, SeedableRng};

    fn png(w: u32, h: u32) -> Vec<u8> {
        let mut v = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        v.extend(w.to_be_bytes());
        v.extend(h.to_be_bytes());
        v.extend([8, 6, 0, 0, 0, 0x12, 0x34, 0x56, 0x78]);
        v
    }

    fn gif(w: u16, h: u16) -> Vec<u8> {
        let mut v = b"GIF89a".to_vec();
        v.extend(w.to_le_bytes());
        v.extend(h.to_le_bytes());
        v.extend([0xf7, 0, 0]);
        v
    }

    /// SOI, APP0 (JFIF), a fill byte, DQT, SOF (given marker), DHT, SOS.
    fn jpeg(sof: u8, w: u16, h: u16) -> Vec<u8> {
        let mut v = vec![0xff, 0xd8];
        v.extend([0xff, 0xe0, 0x00, 0x10]);
        v.extend(b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0");
        v.extend([0xff, 0xff, 0xdb, 0x00, 0x43, 0x00]);
        v.extend([1u8; 64]);
        v.extend([0xff, sof, 0x00, 0x11, 0x08]);
        v.extend(h.to_be_bytes());
        v.extend(w.to_be_bytes());
        v.extend([3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
        v.extend([0xff, 0xc4, 0x00, 0x04, 0x00, 0x00]);
        v.extend([0xff, 0xda, 0x00, 0x08, 1, 1, 0, 0, 0x3f, 0]);
        v
    }

    fn riff(form: &[u8; 4], chunk: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut v = b"RIFF".to_vec();
        v.extend(((4 + 8 + body.len()) as u32).to_le_bytes());
        v.extend(form);
        v.extend(chunk);
        v.extend((body.len() as u32).to_le_bytes());
        v.extend(body);
        v
    }

    fn webp_lossy(w: u16, h: u16) -> Vec<u8> {
        let mut body = vec![0x30, 0x01, 0x00, 0x9d, 0x01, 0x2a];
        body.extend(w.to_le_bytes());
        body.extend(h.to_le_bytes());
        body.extend([0; 8]);
        riff(b"WEBP", b"VP8 ", &body)
    }

    fn webp_lossless(w: u32, h: u32) -> Vec<u8> {
        let bits = (w - 1) | ((h - 1) << 14);
        let mut body = vec![0x2f];
        body.extend(bits.to_le_bytes());
        body.extend([0; 4]);
        riff(b"WEBP", b"VP8L", &body)
    }

    fn webp_extended(w: u32, h: u32) -> Vec<u8> {
        let mut body = vec![0x10, 0, 0, 0];
        body.extend(&(w - 1).to_le_bytes()[..3]);
        body.extend(&(h - 1).to_le_bytes()[..3]);
        riff(b"WEBP", b"VP8X", &body)
    }

    fn ftyp(major: &[u8; 4], compatible: &[&[u8; 4]]) -> Vec<u8> {
        let mut v = ((16 + 4 * compatible.len()) as u32).to_be_bytes().to_vec();
        v.extend(b"ftyp");
        v.extend(major);
        v.extend([0, 0, 2, 0]);
        for b in compatible {
            v.extend(*b);
        }
        v.extend(b"\0\0\0\x08free");
        v
    }

    fn ogg(payload: &[u8]) -> Vec<u8> {
        let mut v = b"OggS\0\x02".to_vec();
        v.extend([0; 8]); // granule
        v.extend([0x11, 0x22, 0x33, 0x44]); // serial
        v.extend([0; 4]); // sequence
        v.extend([0xaa, 0xbb, 0xcc, 0xdd]); // CRC
        v.push(1);
        v.push(payload.len() as u8);
        v.extend(payload);
        v
    }

    fn ebml(doc_type: &[u8]) -> Vec<u8> {
        let mut v = vec![0x1a, 0x45, 0xdf, 0xa3, 0xa3];
        v.extend([0x42, 0x86, 0x81, 0x01, 0x42, 0xf7, 0x81, 0x01]);
        v.extend([0x42, 0x82, 0x80 | doc_type.len() as u8]);
        v.extend(doc_type);
        v.extend([0x42, 0x87, 0x81, 0x04]);
        v
    }

    fn bmp() -> Vec<u8> {
        let mut v = b"BM".to_vec();
        v.extend(70u32.to_le_bytes());
        v.extend([0; 4]);
        v.extend(54u32.to_le_bytes());
        v.extend(40u32.to_le_bytes());
        v.extend(2i32.to_le_bytes());
        v.extend(3i32.to_le_bytes());
        v
    }

    fn samples() -> Vec<(&'static str, Vec<u8>)> {
        vec![
            ("image/jpeg", jpeg(0xc0, 640, 480)),
            ("image/png", png(1920, 1080)),
            ("image/gif", gif(320, 200)),
            ("image/webp", webp_lossy(800, 600)),
            ("image/webp", webp_lossless(123, 45)),
            ("image/webp", webp_extended(4000, 3000)),
            ("image/bmp", bmp()),
            ("image/heic", ftyp(b"heic", &[b"mif1", b"heic"])),
            ("image/heic", ftyp(b"mif1", &[b"mif1", b"heic"])),
            ("image/avif", ftyp(b"avif", &[b"avif", b"mif1", b"miaf"])),
            ("image/avif", ftyp(b"mif1", &[b"miaf", b"avif"])),
            ("image/heif", ftyp(b"mif1", &[b"mif1"])),
            (
                "video/mp4",
                ftyp(b"isom", &[b"isom", b"iso2", b"avc1", b"mp41"]),
            ),
            ("video/mp4", ftyp(b"mp42", &[b"mp42", b"isom"])),
            ("video/mp4", ftyp(b"XXXX", &[b"YYYY", b"isom"])),
            ("audio/mp4", ftyp(b"M4A ", &[b"M4A ", b"mp42", b"isom"])),
            ("video/quicktime", ftyp(b"qt  ", &[b"qt  "])),
            ("video/3gpp", ftyp(b"3gp4", &[b"isom", b"3gp4"])),
            ("video/webm", ebml(b"webm")),
            ("video/x-matroska", ebml(b"matroska")),
            (
                "audio/ogg",
                ogg(b"OpusHead\x01\x01\x38\x01\x80\xbb\0\0\0\0\0"),
            ),
            ("audio/ogg", ogg(b"\x01vorbis\0\0\0\0\x02\x44\xac\0\0")),
            ("audio/mpeg", b"ID3\x04\0\0\0\0\x01\x00".to_vec()),
            ("audio/mpeg", vec![0xff, 0xfb, 0x90, 0x64, 0, 0]),
            ("audio/mpeg", vec![0xff, 0xf3, 0x48, 0xc4, 0, 0]),
            ("audio/aac", vec![0xff, 0xf1, 0x50, 0x80, 0x2e, 0x7f, 0xfc]),
            (
                "audio/wav",
                riff(b"WAVE", b"fmt ", &[1, 0, 1, 0, 0x44, 0xac, 0, 0]),
            ),
            ("video/x-msvideo", riff(b"AVI ", b"LIST", &[0; 8])),
            ("audio/flac", b"fLaC\0\0\0\x22\x10\0".to_vec()),
            ("application/pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n".to_vec()),
            ("application/zip", b"PK\x03\x04\x14\0\0\0\x08\0".to_vec()),
            ("application/zip", b"PK\x05\x06\0\0\0\0".to_vec()),
        ]
    }

    #[test]
    fn sniffs_every_sample() {
        for (mime, bytes) in samples() {
            assert_eq!(sniff(&bytes), Some(mime), "{bytes:02x?}");
        }
    }

    #[test]
    fn unknown_or_too_short_is_none() {
        for head in [
            &b""[..],
            b"\xff",
            b"\xff\xd8",
            b"\x89PNG",
            b"GIF8",
            b"RIFF\0\0\0\0",
            b"RIFF\0\0\0\0AIFF",
            b"hello world, just text",
            b"<svg xmlns=\"http://www.w3.org/2000/svg\"><script/></svg>",
            b"<?xml version=\"1.0\"?><svg/>",
            b"BM plain text starting with BM",
            b"\xff\xff\xff\xff",
            b"\xff\xea\x90\x00", // version 1 (reserved) is not MPEG audio
            b"\0\0\0\x18ftypXXXX\0\0\0\0YYYYZZZZ",
        ] {
            assert_eq!(sniff(head), None, "{head:02x?}");
        }
    }

    #[test]
    fn ogg_opus_is_told_from_other_ogg() {
        assert!(is_ogg_opus(&ogg(b"OpusHead\x01\x01\x38\x01")));
        assert!(!is_ogg_opus(&ogg(b"\x01vorbis\0\0\0\0")));
        assert!(!is_ogg_opus(b"OggS"));
        assert!(!is_ogg_opus(&png(1, 1)));
        let mut wrong_version = ogg(b"OpusHead");
        wrong_version[4] = 1;
        assert!(!is_ogg_opus(&wrong_version));
        let mut truncated = ogg(b"OpusHead");
        truncated.truncate(30);
        assert!(!is_ogg_opus(&truncated));
    }

    #[test]
    fn dimensions_of_every_image_sample() {
        assert_eq!(
            dimensions("image/png", &png(1920, 1080)),
            Some((1920, 1080))
        );
        assert_eq!(dimensions("image/gif", &gif(320, 200)), Some((320, 200)));
        for sof in [0xc0, 0xc1, 0xc2] {
            assert_eq!(
                dimensions("image/jpeg", &jpeg(sof, 640, 480)),
                Some((640, 480))
            );
        }
        assert_eq!(
            dimensions("image/webp", &webp_lossy(800, 600)),
            Some((800, 600))
        );
        assert_eq!(
            dimensions("image/webp", &webp_lossless(123, 45)),
            Some((123, 45))
        );
        assert_eq!(
            dimensions("image/webp", &webp_lossless(16384, 1)),
            Some((16384, 1))
        );
        assert_eq!(
            dimensions("image/webp", &webp_extended(4000, 3000)),
            Some((4000, 3000))
        );
        assert_eq!(
            dimensions("IMAGE/PNG; charset=binary", &png(3, 4)),
            Some((3, 4))
        );
    }

    #[test]
    fn dimensions_need_matching_bytes_and_a_known_type() {
        assert_eq!(dimensions("image/jpeg", &png(10, 10)), None);
        assert_eq!(dimensions("image/png", &gif(10, 10)), None);
        assert_eq!(dimensions("image/bmp", &bmp()), None);
        assert_eq!(dimensions("video/mp4", &png(10, 10)), None);
        assert_eq!(dimensions("image/png", &png(0, 10)), None);
        // A JPEG whose scan starts before any frame header.
        let mut no_sof = vec![0xff, 0xd8, 0xff, 0xda, 0x00, 0x08];
        no_sof.extend([0; 10]);
        assert_eq!(dimensions("image/jpeg", &no_sof), None);
        // A frame header beyond `head`.
        let full = jpeg(0xc0, 640, 480);
        assert_eq!(dimensions("image/jpeg", &full[..98]), None);
        assert_eq!(dimensions("image/jpeg", &full[..99]), Some((640, 480)));
        // A zero-length segment does not loop.
        assert_eq!(
            dimensions(
                "image/jpeg",
                &[0xff, 0xd8, 0xff, 0xe1, 0x00, 0x00, 0xff, 0xc0]
            ),
            None
        );
    }

    #[test]
    fn truncations_never_panic() {
        for (mime, bytes) in samples() {
            for cut in 0..=bytes.len() {
                let head = &bytes[..cut];
                let _ = sniff(head);
                let _ = is_ogg_opus(head);
                for m in [mime, "image/png", "image/gif", "image/jpeg", "image/webp"] {
                    let _ = dimensions(m, head);
                }
            }
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = StdRng::seed_from_u64(0x5eed);
        let prefixes: [&[u8]; 9] = [
            b"",
            b"\xff\xd8",
            b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR",
            b"GIF89a",
            b"RIFF\0\0\0\0WEBPVP8 ",
            b"RIFF\0\0\0\0WEBPVP8L",
            b"RIFF\0\0\0\0WEBPVP8X",
            b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
            b"OggS\0",
        ];
        for i in 0..20_000 {
            let prefix = prefixes[i % prefixes.len()];
            let len = rng.random_range(0..200);
            let mut head = prefix.to_vec();
            let start = head.len();
            head.resize(start + len, 0);
            rng.fill_bytes(&mut head[start..]);
            let _ = sniff(&head);
            let _ = is_ogg_opus(&head);
            for m in ["image/png", "image/gif", "image/jpeg", "image/webp"] {
                let _ = dimensions(m, &head);
            }
            let _ = sniff_ftyp(&head);
        }
    }

    #[test]
    fn extensions_both_ways() {
        let pairs = [
            ("photo.JPG", "image/jpeg", "jpg"),
            ("a.png", "image/png", "png"),
            ("a.gif", "image/gif", "gif"),
            ("a.webp", "image/webp", "webp"),
            ("a.bmp", "image/bmp", "bmp"),
            ("IMG_1.HEIC", "image/heic", "heic"),
            ("a.avif", "image/avif", "avif"),
            ("clip.mp4", "video/mp4", "mp4"),
            ("clip.MOV", "video/quicktime", "mov"),
            ("clip.webm", "video/webm", "webm"),
            ("clip.mkv", "video/x-matroska", "mkv"),
            ("voice.m4a", "audio/mp4", "m4a"),
            ("voice.ogg", "audio/ogg", "ogg"),
            ("song.mp3", "audio/mpeg", "mp3"),
            ("a.aac", "audio/aac", "aac"),
            ("a.wav", "audio/wav", "wav"),
            ("a.flac", "audio/flac", "flac"),
            ("doc.pdf", "application/pdf", "pdf"),
            ("x.tar.zip", "application/zip", "zip"),
            ("notes.txt", "text/plain", "txt"),
        ];
        for (name, mime, ext) in pairs {
            assert_eq!(from_extension(name), Some(mime), "{name}");
            assert_eq!(extension_for(mime), Some(ext), "{mime}");
        }
        assert_eq!(from_extension("voice.oga"), Some("audio/ogg"));
        assert_eq!(from_extension("voice.opus"), Some("audio/ogg"));
        assert_eq!(extension_for("audio/ogg; codecs=opus"), Some("ogg"));
        assert_eq!(extension_for("audio/opus"), Some("opus"));
        assert_eq!(extension_for("Audio/X-M4A"), Some("m4a"));
        assert_eq!(extension_for("image/jpg"), Some("jpg"));
    }

    #[test]
    fn unknown_names_and_types() {
        for name in [
            "",
            "noext",
            "trailing.",
            ".",
            "a.svg",
            "a.SVG",
            "a.exe",
            "dir.d/file",
            "a.verylongext",
        ] {
            assert_eq!(from_extension(name), None, "{name}");
        }
        for mime in [
            "",
            "image/svg+xml",
            "application/octet-stream",
            "text/html",
            "nonsense",
        ] {
            assert_eq!(extension_for(mime), None, "{mime}");
        }
    }

    #[test]
    fn kinds() {
        assert_eq!(kind_of("image/jpeg"), Kind::Image);
        assert_eq!(kind_of("IMAGE/PNG"), Kind::Image);
        assert_eq!(kind_of("image/svg+xml"), Kind::File);
        assert_eq!(kind_of("image/SVG+XML; charset=utf-8"), Kind::File);
        assert_eq!(kind_of("video/mp4"), Kind::Video);
        assert_eq!(kind_of("audio/ogg; codecs=opus"), Kind::Audio);
        assert_eq!(kind_of("application/pdf"), Kind::File);
        assert_eq!(kind_of("text/plain"), Kind::File);
        assert_eq!(kind_of("garbage"), Kind::File);
        assert_eq!(kind_of(""), Kind::File);
    }
}

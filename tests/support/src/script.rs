//! Synthetic numbered media a test publishes through the relay ([`Script`]: frame `i` is
//! video `i`, audio `i` and maybe text `i`), its frame builders, and the checks that a
//! viewer got every message of it in order ([`check_stream`], [`classify`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use shardcast::rtmp::{ClientEvent, MediaKind};

use crate::client::RtmpClient;

/// An AVC sequence header (AVCDecoderConfigurationRecord with one tiny SPS and PPS).
pub const AVC_HEADER: &[u8] = &[
    0x17, 0, 0, 0, 0, 1, 0x42, 0, 0x1e, 0xff, 0xe1, 0, 4, 0x67, 0x42, 0, 0x1e, 1, 0, 2, 0x68, 0xce,
];
/// An AAC sequence header (AudioSpecificConfig: AAC-LC, 44.1 kHz, stereo).
pub const AAC_HEADER: &[u8] = &[0xAF, 0, 0x12, 0x10];

/// An AVC NAL-unit message carrying `seq` after its 5-byte header, `size` bytes long.
pub fn video_frame(seq: u32, keyframe: bool, size: usize) -> Bytes {
    let mut v = vec![if keyframe { 0x17 } else { 0x27 }, 1, 0, 0, 0];
    v.extend_from_slice(&seq.to_be_bytes());
    v.resize(size.max(9), (seq % 251) as u8);
    Bytes::from(v)
}

/// An AAC raw-frame message carrying `seq`.
pub fn audio_frame(seq: u32) -> Bytes {
    let mut v = vec![0xAF, 1];
    v.extend_from_slice(&seq.to_be_bytes());
    v.resize(200, (seq % 13) as u8);
    Bytes::from(v)
}

/// An `onTextData` data message whose text is `seq`.
pub fn text_data(seq: u32) -> Bytes {
    use shardcast::rtmp::amf0::{self, Amf0Value};
    let mut out = Vec::new();
    amf0::encode(&Amf0Value::String("onTextData".into()), &mut out);
    amf0::encode(
        &Amf0Value::Object(vec![("text".into(), Amf0Value::String(seq.to_string()))]),
        &mut out,
    );
    Bytes::from(out)
}

/// A message a viewer got, classified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tag {
    VideoHeader,
    AudioHeader,
    Video { seq: u32, keyframe: bool },
    Audio { seq: u32 },
    Text { seq: u32 },
    Metadata,
    OtherData,
}

/// What a synthetic media or data message is, and its timestamp.
pub fn classify(ev: &ClientEvent) -> Option<(Tag, u32)> {
    use shardcast::media::codec::{inspect_audio, inspect_video};
    use shardcast::rtmp::amf0::{self, Amf0Value};
    match ev {
        ClientEvent::Media {
            kind: MediaKind::Video,
            timestamp,
            payload,
        } => {
            let info = inspect_video(payload)?;
            let tag = if info.is_sequence_header {
                Tag::VideoHeader
            } else {
                let seq = u32::from_be_bytes(payload.get(5..9)?.try_into().ok()?);
                Tag::Video {
                    seq,
                    keyframe: info.is_keyframe(),
                }
            };
            Some((tag, *timestamp))
        }
        ClientEvent::Media {
            kind: MediaKind::Audio,
            timestamp,
            payload,
        } => {
            let info = inspect_audio(payload)?;
            let tag = if info.is_sequence_header {
                Tag::AudioHeader
            } else {
                Tag::Audio {
                    seq: u32::from_be_bytes(payload.get(2..6)?.try_into().ok()?),
                }
            };
            Some((tag, *timestamp))
        }
        ClientEvent::Data {
            timestamp, payload, ..
        } => {
            let values = amf0::decode_all(payload).ok()?;
            let tag = match values.first().and_then(Amf0Value::as_str) {
                Some("onTextData") => Tag::Text {
                    seq: values
                        .get(1)?
                        .get("text")
                        .and_then(Amf0Value::as_str)?
                        .parse()
                        .ok()?,
                },
                Some("onMetaData") => Tag::Metadata,
                _ => Tag::OtherData,
            };
            Some((tag, *timestamp))
        }
        _ => None,
    }
}

/// A short description of events for failure messages.
pub fn summarize(events: &[ClientEvent]) -> String {
    let describe = |ev: &ClientEvent| match classify(ev) {
        Some((tag, ts)) => format!("{tag:?}@{ts}"),
        None => match ev {
            ClientEvent::Status { code, .. } => code.clone(),
            other => format!("{other:?}"),
        },
    };
    // The start and the end, where the interesting part of a failure usually is.
    let (head, tail) = if events.len() > 45 {
        (&events[..15], &events[events.len() - 30..])
    } else {
        (events, &events[..0])
    };
    let mut out: Vec<String> = head.iter().map(describe).collect();
    if !tail.is_empty() {
        out.push(format!("... {} more ...", events.len() - 45));
        out.extend(tail.iter().map(describe));
    }
    out.join(", ")
}

/// The shape of a synthetic publication: frame `i` is video `i` (a keyframe every
/// `keyframe_every`), then audio `i`, then text `i` when `text_every` divides `i`, all
/// stamped `(i - first) * 40` ms.
#[derive(Clone, Copy, Debug)]
pub struct Script {
    /// The first frame's number; its timestamp is 0.
    pub first: u32,
    /// Frames `first..first + frames` make the publication.
    pub frames: u32,
    pub keyframe_every: u32,
    pub text_every: Option<u32>,
    /// Wall-clock pause between frames.
    pub interval: Duration,
    pub video_size: usize,
    pub keyframe_size: usize,
    /// Audio `i` is stamped this much before video `i` (encoders often do so).
    pub audio_lag_ms: u32,
}

impl Script {
    pub fn new(frames: u32) -> Script {
        Script {
            first: 0,
            frames,
            keyframe_every: 30,
            text_every: None,
            interval: Duration::from_millis(10),
            video_size: 1500,
            keyframe_size: 20_000,
            audio_lag_ms: 0,
        }
    }

    pub fn timestamp(&self, i: u32) -> u32 {
        (i - self.first) * 40
    }

    /// The timestamp of audio `i`.
    pub fn audio_timestamp(&self, i: u32) -> u32 {
        self.timestamp(i).saturating_sub(self.audio_lag_ms)
    }

    /// The number of the last frame.
    pub fn last(&self) -> u32 {
        self.first + self.frames - 1
    }

    /// What frame `i` consists of, in sending order.
    pub fn frame_tags(&self, i: u32) -> Vec<Tag> {
        let mut tags = vec![
            Tag::Video {
                seq: i,
                keyframe: (i - self.first).is_multiple_of(self.keyframe_every),
            },
            Tag::Audio { seq: i },
        ];
        if self.text_every.is_some_and(|n| i.is_multiple_of(n)) {
            tags.push(Tag::Text { seq: i });
        }
        tags
    }

    /// Sends the headers (metadata, AVC and AAC sequence headers).
    pub fn send_headers(&self, client: &mut RtmpClient) {
        use shardcast::rtmp::amf0::Amf0Value;
        client.session.send_metadata(vec![
            ("width".into(), Amf0Value::Number(320.0)),
            ("height".into(), Amf0Value::Number(240.0)),
            ("videocodecid".into(), Amf0Value::Number(7.0)),
            ("audiocodecid".into(), Amf0Value::Number(10.0)),
        ]);
        client
            .session
            .send_media(MediaKind::Video, 0, Bytes::from_static(AVC_HEADER));
        client
            .session
            .send_media(MediaKind::Audio, 0, Bytes::from_static(AAC_HEADER));
        client.flush().unwrap();
    }

    /// Sends frame `i`.
    pub fn send_frame(&self, client: &mut RtmpClient, i: u32) {
        let ts = self.timestamp(i);
        let key = (i - self.first).is_multiple_of(self.keyframe_every);
        let size = if key {
            self.keyframe_size
        } else {
            self.video_size
        };
        client
            .session
            .send_media(MediaKind::Video, ts, video_frame(i, key, size));
        client
            .session
            .send_media(MediaKind::Audio, self.audio_timestamp(i), audio_frame(i));
        if self.text_every.is_some_and(|n| i.is_multiple_of(n)) {
            client.session.send_data(ts, text_data(i));
        }
        client.flush().unwrap();
    }

    /// Sends frames `range`, pausing `interval` between them and reading what the relay
    /// sends back; stops early if `stop` is set.
    pub fn send_frames(
        &self,
        client: &mut RtmpClient,
        range: std::ops::Range<u32>,
        stop: Option<&AtomicBool>,
    ) {
        for i in range {
            if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
                return;
            }
            self.send_frame(client, i);
            let _ = client.drain();
            thread::sleep(self.interval);
        }
    }

    /// Runs a whole publication on a thread: publish `key`, headers, every frame, then
    /// `FCUnpublish` + `deleteStream` and close. Returns the publisher's address once it
    /// publishes, and the thread.
    pub fn publish_in_thread(self, port: u16, key: &str) -> (SocketAddr, thread::JoinHandle<()>) {
        let mut client = RtmpClient::publisher(port, key);
        let local = client.local;
        let handle = thread::spawn(move || {
            self.send_headers(&mut client);
            self.send_frames(&mut client, self.first..self.last() + 1, None);
            client.session.close_stream();
            let _ = client.flush();
            thread::sleep(Duration::from_millis(100));
        });
        (local, handle)
    }
}

/// Checks that a viewer got the synthetic stream `script` in order and complete from the
/// keyframe it started at to frame `last` (inclusive): exactly the frames the publisher
/// sent, in the publisher's order, codec headers before the first frame, timestamps never
/// going backwards and each frame stamped as sent. Returns the frame it started at.
pub fn check_stream(events: &[ClientEvent], script: &Script, last: u32) -> Result<u32, String> {
    let tagged: Vec<(Tag, u32)> = events.iter().filter_map(classify).collect();
    let first_video = tagged
        .iter()
        .position(|(t, _)| matches!(t, Tag::Video { .. }))
        .ok_or_else(|| format!("no video frame; got {}", summarize(events)))?;
    let Tag::Video {
        seq: start,
        keyframe,
    } = tagged[first_video].0
    else {
        unreachable!()
    };
    if !keyframe {
        return Err(format!("the first video frame ({start}) is not a keyframe"));
    }
    let before = &tagged[..first_video];
    for header in [Tag::VideoHeader, Tag::AudioHeader] {
        if !before.iter().any(|(t, _)| *t == header) {
            return Err(format!("no {header:?} before the first frame: {before:?}"));
        }
    }
    if let Some((t, _)) = before.iter().find(|(t, _)| {
        !matches!(
            t,
            Tag::VideoHeader | Tag::AudioHeader | Tag::Metadata | Tag::OtherData
        )
    }) {
        return Err(format!("{t:?} before the first keyframe"));
    }
    let got: Vec<Tag> = tagged[first_video..]
        .iter()
        .map(|(t, _)| *t)
        .filter(|t| !matches!(t, Tag::Metadata | Tag::OtherData))
        .collect();
    let expected: Vec<Tag> = (start..=last).flat_map(|i| script.frame_tags(i)).collect();
    if got != expected {
        let at = got
            .iter()
            .zip(&expected)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(expected.len()));
        return Err(format!(
            "from frame {start}: {} messages, expected {}; first difference at {at}: got {:?}, expected {:?}",
            got.len(),
            expected.len(),
            got.get(at.saturating_sub(2)..(at + 3).min(got.len())),
            expected.get(at.saturating_sub(2)..(at + 3).min(expected.len())),
        ));
    }
    // Each kind's timestamps never go back; with audio stamped in step with the video,
    // the whole sequence's do not either.
    let mut prev = 0u32;
    let mut prev_of_kind = std::collections::HashMap::new();
    for (tag, ts) in &tagged {
        let kind = match tag {
            Tag::Video { .. } | Tag::VideoHeader => 0,
            Tag::Audio { .. } | Tag::AudioHeader => 1,
            _ => 2,
        };
        let prev_kind = prev_of_kind.insert(kind, *ts).unwrap_or(0);
        if *ts < prev_kind || (script.audio_lag_ms == 0 && *ts < prev) {
            return Err(format!(
                "timestamp went back from {} to {ts} at {tag:?}",
                prev_kind.max(prev)
            ));
        }
        prev = *ts;
        let sent = match tag {
            Tag::Video { seq, .. } | Tag::Text { seq } => script.timestamp(*seq),
            Tag::Audio { seq } => script.audio_timestamp(*seq),
            _ => continue,
        };
        if *ts != sent {
            return Err(format!("{tag:?} stamped {ts}, sent at {sent}"));
        }
    }
    Ok(start)
}

/// The status codes among `events`, in order.
pub fn status_codes(events: &[ClientEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Status { code, .. } => Some(code.clone()),
            _ => None,
        })
        .collect()
}

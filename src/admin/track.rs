//! A stream's tracks as an operator reads them: codec names as SRS writes them, profile,
//! level, resolution, frame rate, sample rate, channels.
//!
//! The shards hand over the codec configurations and `onMetaData` as received (shared
//! handles); the parsing (`media/track_info.rs`) happens here, on the admin thread, only
//! when someone asks.

use crate::media::codec::{AudioCodec, VideoCodec};
use crate::media::track_info::{
    AudioDetails, VideoDetails, audio_details, merge as merge_video, merge_audio, metadata_details,
    video_details,
};
use crate::relay::snapshot::StreamTotals;

/// The video codec's name as SRS's API writes it.
pub fn video_codec_name(codec: VideoCodec) -> &'static str {
    match codec {
        VideoCodec::Avc => "H264",
        VideoCodec::Hevc | VideoCodec::LegacyHevc => "HEVC",
        VideoCodec::Av1 => "AV1",
        VideoCodec::Vp9 => "VP9",
        VideoCodec::Vp6 => "VP6",
        VideoCodec::Vp6Alpha => "VP6A",
        VideoCodec::SorensonH263 => "H263",
        VideoCodec::ScreenVideo => "ScreenVideo",
        VideoCodec::ScreenVideo2 => "ScreenVideo2",
        VideoCodec::OtherFourCc(_) | VideoCodec::Other(_) => "other",
    }
}

/// The audio codec's name as SRS's API writes it.
pub fn audio_codec_name(codec: AudioCodec) -> &'static str {
    match codec {
        AudioCodec::Aac | AudioCodec::ExAac => "AAC",
        AudioCodec::Mp3 | AudioCodec::Mp3_8k | AudioCodec::ExMp3 => "MP3",
        AudioCodec::Opus => "Opus",
        AudioCodec::Flac => "FLAC",
        AudioCodec::Ac3 => "AC3",
        AudioCodec::Eac3 => "EAC3",
        AudioCodec::Speex => "Speex",
        AudioCodec::Pcm | AudioCodec::PcmLe => "PCM",
        AudioCodec::Adpcm => "ADPCM",
        AudioCodec::G711A => "G711A",
        AudioCodec::G711U => "G711U",
        AudioCodec::Nellymoser | AudioCodec::Nellymoser8k | AudioCodec::Nellymoser16k => {
            "Nellymoser"
        }
        AudioCodec::DeviceSpecific | AudioCodec::OtherFourCc(_) | AudioCodec::Other(_) => "other",
    }
}

/// What is known of a stream's video and audio.
#[derive(Clone, Debug, Default)]
pub struct StreamTracks {
    pub video: Option<VideoDetails>,
    pub audio: Option<AudioDetails>,
}

impl StreamTracks {
    pub fn of(s: &StreamTotals) -> StreamTracks {
        let meta = s
            .metadata
            .as_deref()
            .map(metadata_details)
            .unwrap_or_default();
        let video = s.video_header.as_deref().and_then(video_details);
        let audio = s.audio_header.as_deref().and_then(audio_details);
        let mut video = merge_video(video, &meta);
        let mut audio = merge_audio(audio, &meta);
        // The shard's own reading of the codec stands when the configuration says less.
        if let (Some(v), Some(codec)) = (video.as_mut(), s.video) {
            v.codec.get_or_insert(codec);
        }
        if let (Some(a), Some(codec)) = (audio.as_mut(), s.audio) {
            a.codec.get_or_insert(codec);
        }
        if video.is_none() && s.video.is_some() {
            video = Some(VideoDetails {
                codec: s.video,
                ..VideoDetails::default()
            });
        }
        if audio.is_none() && s.audio.is_some() {
            audio = Some(AudioDetails {
                codec: s.audio,
                ..AudioDetails::default()
            });
        }
        StreamTracks { video, audio }
    }

    pub fn width(&self) -> Option<u32> {
        self.video.as_ref()?.width
    }

    pub fn height(&self) -> Option<u32> {
        self.video.as_ref()?.height
    }
}

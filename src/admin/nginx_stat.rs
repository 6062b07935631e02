//! `GET /stat`: nginx-rtmp's statistics XML, so the dashboards and exporters written for
//! `rtmp_stat all;` keep working after a move to shardcast.
//!
//! The shape follows nginx-rtmp's `ngx_rtmp_stat_module`: `<rtmp>` with the process's
//! totals, then `<server><application><live>` with one `<stream>` per stream (its clients,
//! bandwidth, codecs) and the application's client count. Unlike nginx-rtmp with several
//! workers, the numbers cover every shard, not the one worker that happened to answer.
//! Stream names come from clients, so every text is escaped.

use std::fmt::Write;
use std::time::Duration;

use super::track::{StreamTracks, audio_codec_name, video_codec_name};
use crate::relay::client::RoleKind;
use crate::relay::snapshot::{ShardSnapshot, StreamTotals};

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Renders the XML for the configured `apps`, from every shard's snapshot (with clients).
pub fn render(
    apps: &[String],
    shards: &[ShardSnapshot],
    streams: &[StreamTotals],
    uptime: Duration,
) -> String {
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"utf-8\" ?>\n<rtmp>\n");
    let sum = |f: fn(&ShardSnapshot) -> u64| shards.iter().map(f).sum::<u64>();
    let kbps_in: u64 = streams.iter().map(|s| s.kbps_in).sum();
    let kbps_out: u64 = streams.iter().map(|s| s.kbps_out).sum();
    let _ = write!(
        x,
        "<nginx_version>shardcast</nginx_version>\n<nginx_rtmp_version>shardcast {}</nginx_rtmp_version>\n<pid>{}</pid>\n<uptime>{}</uptime>\n<naccepted>{}</naccepted>\n<bw_in>{}</bw_in>\n<bytes_in>{}</bytes_in>\n<bw_out>{}</bw_out>\n<bytes_out>{}</bytes_out>\n<server>\n",
        env!("CARGO_PKG_VERSION"),
        std::process::id(),
        uptime.as_secs(),
        sum(|s| s.stats.accepted),
        kbps_in * 1000,
        sum(|s| s.bytes_in),
        kbps_out * 1000,
        sum(|s| s.bytes_out),
    );
    for app in apps {
        let _ = write!(x, "<application>\n<name>{}</name>\n<live>\n", escape(app));
        let mut app_clients = 0;
        for s in streams.iter().filter(|s| s.app_and_key().0 == app) {
            app_clients += stream_xml(&mut x, s, shards);
        }
        let _ = write!(
            x,
            "<nclients>{app_clients}</nclients>\n</live>\n</application>\n"
        );
    }
    x.push_str("</server>\n</rtmp>\n");
    x
}

/// Writes one `<stream>`; returns its client count (publisher included).
fn stream_xml(x: &mut String, s: &StreamTotals, shards: &[ShardSnapshot]) -> usize {
    let (_, key) = s.app_and_key();
    let time = s.live_for.unwrap_or_default().as_millis();
    let _ = write!(
        x,
        "<stream>\n<name>{}</name>\n<time>{time}</time>\n<bw_in>{}</bw_in>\n<bytes_in>{}</bytes_in>\n<bw_out>{}</bw_out>\n<bytes_out>{}</bytes_out>\n<bw_audio>0</bw_audio>\n<bw_video>0</bw_video>\n",
        escape(key),
        s.kbps_in * 1000,
        s.bytes_in,
        s.kbps_out * 1000,
        s.bytes_out,
    );
    let mut clients = 0;
    for c in shards
        .iter()
        .flat_map(|sh| &sh.clients)
        .filter(|c| c.stream.as_ref() == Some(&s.name))
    {
        clients += 1;
        let _ = write!(
            x,
            "<client>\n<id>{}</id>\n<address>{}</address>\n<time>{}</time>\n<flashver></flashver>\n<dropped>{}</dropped>\n<avsync>0</avsync>\n<timestamp>0</timestamp>\n",
            c.id,
            c.addr.ip(),
            c.connected_for.as_millis(),
            c.dropped_frames,
        );
        if c.role == RoleKind::Publisher {
            x.push_str("<publishing/>\n");
        }
        if !c.waiting {
            x.push_str("<active/>\n");
        }
        x.push_str("</client>\n");
    }
    let tracks = StreamTracks::of(s);
    x.push_str("<meta>\n");
    if let Some(v) = &tracks.video {
        let _ = write!(
            x,
            "<video>\n<width>{}</width>\n<height>{}</height>\n<frame_rate>{}</frame_rate>\n<codec>{}</codec>\n<profile>{}</profile>\n<compat>0</compat>\n<level>{}</level>\n</video>\n",
            v.width.unwrap_or(0),
            v.height.unwrap_or(0),
            v.fps.map_or(0, |f| f.round() as u64),
            v.codec.map(video_codec_name).unwrap_or(""),
            escape(v.profile.as_deref().unwrap_or("")),
            escape(v.level.as_deref().unwrap_or("")),
        );
    }
    if let Some(a) = &tracks.audio {
        let _ = write!(
            x,
            "<audio>\n<codec>{}</codec>\n<profile>{}</profile>\n<channels>{}</channels>\n<sample_rate>{}</sample_rate>\n</audio>\n",
            a.codec.map(audio_codec_name).unwrap_or(""),
            escape(a.profile.as_deref().unwrap_or("")),
            a.channels.unwrap_or(0),
            a.sample_rate.unwrap_or(0),
        );
    }
    x.push_str("</meta>\n");
    let _ = writeln!(x, "<nclients>{clients}</nclients>");
    if s.publisher.is_some() {
        x.push_str("<publishing/>\n<active/>\n");
    }
    x.push_str("</stream>\n");
    clients
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_clients_are_escaped() {
        assert_eq!(escape("a<b>&\"'\u{1}c"), "a&lt;b&gt;&amp;&quot;&apos;c");
    }

    #[test]
    fn empty_server_lists_its_applications() {
        let xml = render(&["live".into()], &[], &[], Duration::from_secs(3));
        assert!(xml.contains("<application>\n<name>live</name>\n<live>\n<nclients>0</nclients>"));
        assert!(xml.contains("<uptime>3</uptime>"));
        assert!(xml.ends_with("</server>\n</rtmp>\n"));
    }
}

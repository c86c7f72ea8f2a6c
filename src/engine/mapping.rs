//! Which source streams a session outputs, and how: the stream mapping as a pure plan,
//! decided from the streams' kinds, codecs and languages and the profile, before any
//! libav object is made (unit-tested below).
//!
//! - A relay is a relay: every video, audio, subtitle (DVB subtitles, teletext) and data
//!   stream MPEG-TS can carry, in source order, with its language, title and
//!   disposition. Streams the muxer cannot carry are skipped and named, never a failure.
//! - A transcode encodes the main video (libav's best) and the audio tracks
//!   `audio_tracks` selects (`all`, `first`, or languages in preference order), each
//!   keeping its language; subtitles and data are copied unless `subtitles: none`.

use crate::config::{AudioTracks, Profile, Subtitles};
use ff::codec::Id;
use ff::format::stream::Disposition;
use ffmpeg_next as ff;

/// What a source stream is, as far as mapping goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub index: usize,
    pub kind: Kind,
    pub codec: Id,
    pub language: Option<String>,
    /// Cover art and the like: never output.
    pub attached_picture: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Video,
    Audio,
    Subtitle,
    Data,
    Other,
}

/// What happens to one output stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Stream copy.
    Copy,
    /// Encode with this encoder.
    Encode(String),
}

/// The mapping of one session.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// (source stream index, action), in output order.
    pub outputs: Vec<(usize, Action)>,
    /// Source streams left out and why, for one warning.
    pub skipped: Vec<String>,
}

/// Codecs the MPEG-TS muxer maps to a stream type players know.
pub fn ts_carries(id: Id) -> bool {
    use Id::*;
    matches!(
        id,
        MPEG1VIDEO
            | MPEG2VIDEO
            | MPEG4
            | H264
            | HEVC
            | CAVS
            | DIRAC
            | VC1
            | MP2
            | MP3
            | AAC
            | AAC_LATM
            | AC3
            | EAC3
            | DTS
            | TRUEHD
            | OPUS
            | S302M
            | DVB_SUBTITLE
            | DVB_TELETEXT
            | SMPTE_KLV
            | TIMED_ID3
    )
}

fn codec_name(id: Id) -> String {
    ff::codec::decoder::find(id)
        .map(|c| c.name().to_owned())
        .unwrap_or_else(|| format!("{id:?}").to_lowercase())
}

/// The audio streams `tracks` selects, in output order.
fn select_audio(audio: &[&Source], tracks: &AudioTracks) -> Vec<usize> {
    match tracks {
        AudioTracks::All => audio.iter().map(|s| s.index).collect(),
        AudioTracks::First => audio.first().map(|s| s.index).into_iter().collect(),
        AudioTracks::Languages(langs) => {
            let mut picked: Vec<usize> = Vec::new();
            for l in langs {
                for s in audio {
                    let matches = s
                        .language
                        .as_deref()
                        .is_some_and(|sl| sl.eq_ignore_ascii_case(l));
                    if matches && !picked.contains(&s.index) {
                        picked.push(s.index);
                    }
                }
            }
            if picked.is_empty() {
                // Never silent: the first track when no language matches.
                picked.extend(audio.first().map(|s| s.index));
            }
            picked
        }
    }
}

/// Plans a session. `best_video`/`best_audio`: libav's choice of main streams. Errors
/// when the main video or audio is to be copied but MPEG-TS cannot carry it (raw video,
/// PCM): the operator must choose a profile that encodes.
pub fn plan(
    streams: &[Source],
    best_video: Option<usize>,
    profile: &Profile,
) -> Result<Plan, String> {
    let video_codec = profile.video_codec.as_deref().unwrap_or("copy");
    let audio_codec = profile.audio_codec.as_deref().unwrap_or("copy");
    let tracks = profile.audio_tracks.clone().unwrap_or_default();
    let audio: Vec<&Source> = streams.iter().filter(|s| s.kind == Kind::Audio).collect();
    let chosen_audio = select_audio(&audio, &tracks);
    let mut plan = Plan::default();
    let mut audio_done = false;
    for s in streams {
        let name = codec_name(s.codec);
        let skip = |plan: &mut Plan, why: &str| {
            plan.skipped
                .push(format!("stream {} ({name}): {why}", s.index));
        };
        if s.attached_picture {
            skip(&mut plan, "an attached picture");
            continue;
        }
        match s.kind {
            Kind::Video if Some(s.index) == best_video => {
                if video_codec == "copy" {
                    if !ts_carries(s.codec) {
                        return Err(format!(
                            "the source's video is {name}: MPEG-TS cannot carry it; use a profile that encodes (e.g. video_codec: libx264)"
                        ));
                    }
                    plan.outputs.push((s.index, Action::Copy));
                } else {
                    plan.outputs
                        .push((s.index, Action::Encode(video_codec.to_owned())));
                }
            }
            Kind::Video if video_codec != "copy" => {
                skip(&mut plan, "only the main video is transcoded")
            }
            Kind::Audio => {
                // The chosen tracks go out together, in selection order, where the
                // first audio stream stood.
                if audio_done {
                    if !chosen_audio.contains(&s.index) {
                        skip(&mut plan, "not selected by audio_tracks");
                    }
                    continue;
                }
                audio_done = true;
                for &i in &chosen_audio {
                    let a = &streams[streams.iter().position(|x| x.index == i).unwrap_or(0)];
                    if audio_codec != "copy" {
                        plan.outputs
                            .push((i, Action::Encode(audio_codec.to_owned())));
                    } else if ts_carries(a.codec) {
                        plan.outputs.push((i, Action::Copy));
                    } else if chosen_audio.len() == 1 {
                        return Err(format!(
                            "the source's audio is {}: MPEG-TS cannot carry it; use a profile that encodes (e.g. audio_codec: aac)",
                            codec_name(a.codec)
                        ));
                    } else {
                        plan.skipped.push(format!(
                            "stream {i} ({}): MPEG-TS cannot carry it",
                            codec_name(a.codec)
                        ));
                    }
                }
                if !chosen_audio.contains(&s.index) {
                    skip(&mut plan, "not selected by audio_tracks");
                }
            }
            Kind::Subtitle if profile.subtitles == Some(Subtitles::None) => {
                skip(&mut plan, "subtitles: none")
            }
            Kind::Video | Kind::Subtitle | Kind::Data if ts_carries(s.codec) => {
                plan.outputs.push((s.index, Action::Copy))
            }
            _ => skip(&mut plan, "MPEG-TS cannot carry it"),
        }
    }
    if plan.outputs.is_empty() {
        return Err("the source has no audio or video stream".into());
    }
    Ok(plan)
}

/// Copies a source stream's metadata (language, title) and disposition (default, hearing
/// or visually impaired, original, commentary, ...) to its output stream; the MPEG-TS
/// muxer writes them into the PMT's language descriptors.
pub fn carry_stream_info(
    ist: &ff::format::stream::Stream,
    ost: &mut ff::format::stream::StreamMut,
) {
    ost.set_metadata(ist.metadata().to_owned());
    // SAFETY: a plain field copy between two valid streams.
    unsafe {
        (*ost.as_mut_ptr()).disposition = (*ist.as_ptr()).disposition;
    }
}

/// The dispositions worth showing in a status line.
pub fn disposition_names(d: Disposition) -> Vec<&'static str> {
    [
        (Disposition::DEFAULT, "default"),
        (Disposition::ORIGINAL, "original"),
        (Disposition::COMMENT, "commentary"),
        (Disposition::HEARING_IMPAIRED, "hearing_impaired"),
        (Disposition::VISUAL_IMPAIRED, "visual_impaired"),
    ]
    .into_iter()
    .filter(|(f, _)| d.contains(*f))
    .map(|(_, n)| n)
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(index: usize, kind: Kind, codec: Id, lang: Option<&str>) -> Source {
        Source {
            index,
            kind,
            codec,
            language: lang.map(str::to_owned),
            attached_picture: false,
        }
    }

    fn broadcast() -> Vec<Source> {
        vec![
            s(0, Kind::Video, Id::H264, None),
            s(1, Kind::Audio, Id::AAC, Some("eng")),
            s(2, Kind::Audio, Id::AAC, Some("deu")),
            s(3, Kind::Audio, Id::AC3, Some("eng")),
            s(4, Kind::Subtitle, Id::DVB_SUBTITLE, Some("deu")),
            s(5, Kind::Subtitle, Id::DVB_TELETEXT, Some("eng")),
            s(6, Kind::Data, Id::SCTE_35, None),
            s(7, Kind::Subtitle, Id::SUBRIP, Some("fra")),
        ]
    }

    fn profile(v: &str, a: &str) -> Profile {
        Profile {
            video_codec: Some(v.into()),
            audio_codec: Some(a.into()),
            ..Profile::default()
        }
    }

    #[test]
    fn a_relay_keeps_every_stream_ts_can_carry_in_source_order() {
        let p = plan(&broadcast(), Some(0), &profile("copy", "copy")).unwrap();
        let idx: Vec<usize> = p.outputs.iter().map(|o| o.0).collect();
        assert_eq!(idx, [0, 1, 2, 3, 4, 5]);
        assert!(p.outputs.iter().all(|o| o.1 == Action::Copy));
        assert_eq!(p.skipped.len(), 2, "{:?}", p.skipped);
        assert!(p.skipped[0].starts_with("stream 6 "), "{:?}", p.skipped);
        assert!(
            p.skipped[1].starts_with("stream 7 (") && p.skipped[1].ends_with("cannot carry it"),
            "{:?}",
            p.skipped
        );
    }

    #[test]
    fn a_transcode_encodes_the_selected_audio_and_copies_subtitles() {
        let p = plan(&broadcast(), Some(0), &profile("libx264", "aac")).unwrap();
        assert_eq!(
            p.outputs,
            [
                (0, Action::Encode("libx264".into())),
                (1, Action::Encode("aac".into())),
                (2, Action::Encode("aac".into())),
                (3, Action::Encode("aac".into())),
                (4, Action::Copy),
                (5, Action::Copy),
            ]
        );
        let mut first = profile("libx264", "aac");
        first.audio_tracks = Some(AudioTracks::First);
        first.subtitles = Some(Subtitles::None);
        let p = plan(&broadcast(), Some(0), &first).unwrap();
        let idx: Vec<usize> = p.outputs.iter().map(|o| o.0).collect();
        assert_eq!(idx, [0, 1]);
    }

    #[test]
    fn languages_pick_tracks_in_preference_order() {
        let mut pr = profile("copy", "copy");
        pr.audio_tracks = Some(AudioTracks::Languages(vec!["deu".into(), "eng".into()]));
        let p = plan(&broadcast(), Some(0), &pr).unwrap();
        let idx: Vec<usize> = p.outputs.iter().map(|o| o.0).collect();
        assert_eq!(idx, [0, 2, 1, 3, 4, 5]);
        // No match: the first track, never silence.
        pr.audio_tracks = Some(AudioTracks::Languages(vec!["jpn".into()]));
        let p = plan(&broadcast(), Some(0), &pr).unwrap();
        let idx: Vec<usize> = p.outputs.iter().map(|o| o.0).collect();
        assert_eq!(idx, [0, 1, 4, 5]);
        assert!(p.skipped.iter().any(|s| s.starts_with("stream 2 ")));
    }

    #[test]
    fn raw_main_streams_cannot_be_relayed_but_other_raw_ones_are_skipped() {
        let raw = vec![
            s(0, Kind::Video, Id::RAWVIDEO, None),
            s(1, Kind::Audio, Id::AAC, None),
        ];
        let e = plan(&raw, Some(0), &profile("copy", "copy")).unwrap_err();
        assert!(
            e.contains("rawvideo") && e.contains("MPEG-TS cannot carry"),
            "{e}"
        );
        let pcm = vec![
            s(0, Kind::Video, Id::H264, None),
            s(1, Kind::Audio, Id::PCM_S16LE, None),
        ];
        let e = plan(&pcm, Some(0), &profile("copy", "copy")).unwrap_err();
        assert!(e.contains("audio_codec: aac"), "{e}");
        // Transcoding them is fine.
        assert!(plan(&raw, Some(0), &profile("libx264", "aac")).is_ok());
        assert!(plan(&[], None, &profile("copy", "copy")).is_err());
    }
}

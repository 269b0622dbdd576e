//! Unit tests of the monitor's pure parts, from the files the monitor compiles (the
//! library is built with the standard library only under test, for the harness): the log records it writes, the frames it speaks to attached clients, the
//! command line the daemon gives it, the exit record it leaves and the cgroup file it
//! reads. The shared files' own tests (in the daemon's tree) run here too.

mod log_records {
    use crate::record::{LineSplitter, MAX_PIECE, Stream, Tag, Time, push_rfc3339, write_record};

    fn record(secs: u64, nanos: u32, stream: Stream, tag: Tag, content: &[u8]) -> String {
        let mut out = Vec::new();
        write_record(&mut out, Time { secs, nanos }, stream, tag, content);
        String::from_utf8(out).expect("a record of UTF-8 content is UTF-8")
    }

    fn timestamp(secs: u64, nanos: u32) -> String {
        let mut out = Vec::new();
        push_rfc3339(&mut out, Time { secs, nanos });
        String::from_utf8(out).expect("a timestamp is ASCII")
    }

    /// What a splitter of `max`-byte pieces emits for `chunks`, then the stream's end.
    fn pieces(max: usize, chunks: &[&[u8]]) -> Vec<(Vec<u8>, Tag)> {
        let mut splitter = LineSplitter::new(max);
        let mut out = Vec::new();
        for chunk in chunks {
            splitter.feed(chunk, |piece, tag| out.push((piece.to_vec(), tag)));
        }
        splitter.finish(|piece, tag| out.push((piece.to_vec(), tag)));
        out
    }

    #[test]
    fn a_full_line_is_one_cri_record() {
        assert_eq!(
            record(
                1_795_491_000,
                123_456_789,
                Stream::Stdout,
                Tag::Full,
                b"hello"
            ),
            "2026-11-24T03:30:00.123456789Z stdout F hello\n"
        );
        assert_eq!(
            record(1_795_491_000, 0, Stream::Stderr, Tag::Full, b""),
            "2026-11-24T03:30:00.000000000Z stderr F \n",
            "an empty line keeps the space before its (empty) content"
        );
    }

    #[test]
    fn a_partial_piece_is_tagged_p() {
        assert_eq!(
            record(
                1_795_491_000,
                5,
                Stream::Stderr,
                Tag::Partial,
                b"the first part"
            ),
            "2026-11-24T03:30:00.000000005Z stderr P the first part\n"
        );
    }

    #[test]
    fn content_is_written_as_it_came() {
        let mut out = Vec::new();
        let content = b"tab\there \xff\xfe not UTF-8";
        write_record(
            &mut out,
            Time { secs: 0, nanos: 0 },
            Stream::Stdout,
            Tag::Full,
            content,
        );
        let prefix = b"1970-01-01T00:00:00.000000000Z stdout F ";
        assert_eq!(&out[..prefix.len()], prefix);
        assert_eq!(&out[prefix.len()..out.len() - 1], content);
        assert_eq!(out.last(), Some(&b'\n'));
    }

    #[test]
    fn timestamps_across_calendar_edges() {
        assert_eq!(timestamp(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(timestamp(951_782_400, 0), "2000-02-29T00:00:00.000000000Z");
        assert_eq!(
            timestamp(1_709_251_199, 999_999_999),
            "2024-02-29T23:59:59.999999999Z"
        );
        assert_eq!(
            timestamp(1_709_251_200, 0),
            "2024-03-01T00:00:00.000000000Z"
        );
        // 2100 is no leap year: February ends on the 28th.
        assert_eq!(
            timestamp(4_107_542_400 - 1, 0),
            "2100-02-28T23:59:59.000000000Z"
        );
        assert_eq!(
            timestamp(4_107_542_400, 0),
            "2100-03-01T00:00:00.000000000Z"
        );
        assert_eq!(
            timestamp(253_402_300_799, 1),
            "9999-12-31T23:59:59.000000001Z"
        );
    }

    #[test]
    fn long_lines_are_cut_into_partial_pieces() {
        let line = vec![b'x'; 2 * MAX_PIECE + 100];
        let mut wire = line.clone();
        wire.push(b'\n');
        let got = pieces(MAX_PIECE, &[&wire]);
        let sizes: Vec<(usize, Tag)> = got.iter().map(|(p, t)| (p.len(), *t)).collect();
        assert_eq!(
            sizes,
            [
                (MAX_PIECE, Tag::Partial),
                (MAX_PIECE, Tag::Partial),
                (100, Tag::Full)
            ]
        );
        let joined: Vec<u8> = got.into_iter().flat_map(|(piece, _)| piece).collect();
        assert_eq!(joined, line, "nothing lost or added");
    }

    #[test]
    fn pieces_follow_lines_not_writes() {
        use Tag::{Full as F, Partial as P};
        assert_eq!(
            pieces(16, &[b"one\ntw", b"o\n", b"\n", b"three"]),
            [
                (b"one".to_vec(), F),
                (b"two".to_vec(), F),
                (Vec::new(), F),
                (b"three".to_vec(), F)
            ]
        );
        // A piece full when the line goes on is partial; a line that ends exactly
        // there is one full piece.
        assert_eq!(
            pieces(3, &[b"abc", b"d\nxyz\n"]),
            [
                (b"abc".to_vec(), P),
                (b"d".to_vec(), F),
                (b"xyz".to_vec(), F)
            ]
        );
        assert_eq!(
            pieces(1, &[b"ab\n"]),
            [(b"a".to_vec(), P), (b"b".to_vec(), F)]
        );
        assert_eq!(
            pieces(0, &[b"ab\n"]),
            [(b"a".to_vec(), P), (b"b".to_vec(), F)],
            "a zero size is taken as one byte"
        );
        // A terminal's line end is "\r\n": the "\r" is no content.
        assert_eq!(pieces(16, &[b"prompt$ \r\n"]), [(b"prompt$ ".to_vec(), F)]);
        assert!(pieces(16, &[b"", b""]).is_empty());
    }

    #[test]
    fn stream_and_tag_words() {
        assert_eq!(
            (Stream::Stdout.as_str(), Stream::Stderr.as_str()),
            ("stdout", "stderr")
        );
        assert_eq!((Tag::Partial.as_str(), Tag::Full.as_str()), ("P", "F"));
    }
}

mod attach_frames {
    use crate::frames::{
        Decoder, FrameError, Kind, MAX_FRAME, Streams, encode, parse_resize, resize_payload,
    };

    const KINDS: [Kind; 7] = [
        Kind::Stdin,
        Kind::Stdout,
        Kind::Stderr,
        Kind::CloseStdin,
        Kind::Resize,
        Kind::Exit,
        Kind::Error,
    ];

    #[test]
    fn a_frame_is_its_kind_a_length_and_the_payload() {
        let mut wire = Vec::new();
        encode(Kind::Stdout, b"hello", &mut wire);
        assert_eq!(wire, [1, 0, 0, 0, 5, b'h', b'e', b'l', b'l', b'o']);
        // The exit frame as the pump writes it: the code, big-endian.
        wire.clear();
        encode(Kind::Exit, &137i32.to_be_bytes(), &mut wire);
        assert_eq!(wire, [5, 0, 0, 0, 4, 0, 0, 0, 137]);
        wire.clear();
        encode(Kind::CloseStdin, b"", &mut wire);
        assert_eq!(wire, [3, 0, 0, 0, 0]);
        assert_eq!(resize_payload(0x0102, 0x0304), [1, 2, 3, 4]);
    }

    #[test]
    fn every_kind_round_trips_byte_by_byte() {
        let mut wire = Vec::new();
        for (i, kind) in KINDS.iter().enumerate() {
            encode(*kind, &vec![i as u8; i * 3], &mut wire);
        }
        let mut decoder = Decoder::default();
        let mut frames = Vec::new();
        for byte in &wire {
            decoder.push(std::slice::from_ref(byte));
            while let Some(frame) = decoder.next_frame().expect("well-formed") {
                frames.push(frame);
            }
        }
        let expected: Vec<(Kind, Vec<u8>)> = KINDS
            .iter()
            .enumerate()
            .map(|(i, kind)| (*kind, vec![i as u8; i * 3]))
            .collect();
        assert_eq!(frames, expected);
        assert_eq!(decoder.next_frame(), Ok(None), "nothing left over");
    }

    #[test]
    fn a_frame_waits_for_its_whole_payload() {
        let mut decoder = Decoder::default();
        decoder.push(&[2, 0, 0, 0, 3, b'a']);
        assert_eq!(decoder.next_frame(), Ok(None));
        decoder.push(b"bc");
        assert_eq!(
            decoder.next_frame(),
            Ok(Some((Kind::Stderr, b"abc".to_vec())))
        );
    }

    #[test]
    fn the_size_limit_is_inclusive() {
        let header = |len: usize| {
            let mut wire = vec![Kind::Stdin as u8];
            wire.extend_from_slice(&(len as u32).to_be_bytes());
            wire
        };
        let mut decoder = Decoder::default();
        decoder.push(&header(MAX_FRAME));
        assert_eq!(decoder.next_frame(), Ok(None), "as large as allowed: wait");
        let mut decoder = Decoder::default();
        decoder.push(&header(MAX_FRAME + 1));
        assert_eq!(
            decoder.next_frame(),
            Err(FrameError::TooLarge(MAX_FRAME + 1))
        );
        assert_eq!(
            FrameError::TooLarge(MAX_FRAME + 1).to_string(),
            "a frame of 1048577 bytes is larger than 1048576"
        );
        assert_eq!(FrameError::Kind(7).to_string(), "unknown frame kind 7");
    }

    #[test]
    fn resize_payloads_are_four_bytes() {
        assert_eq!(parse_resize(&resize_payload(80, 24)), Some((80, 24)));
        assert_eq!(
            parse_resize(&resize_payload(u16::MAX, 0)),
            Some((u16::MAX, 0))
        );
        assert_eq!(parse_resize(&[0, 80, 0, 24, 0]), None);
        assert_eq!(parse_resize(&[]), None);
    }

    #[test]
    fn stream_sets_in_request_lines() {
        let all = Streams {
            stdin: true,
            stdout: true,
            stderr: true,
        };
        assert_eq!(all.encode(), "ioe");
        assert_eq!(Streams::default().encode(), "-");
        let output = Streams {
            stdin: false,
            stdout: true,
            stderr: true,
        };
        assert_eq!(output.encode(), "oe");
        assert_eq!(Streams::parse("eoi"), Some(all), "any order");
        assert_eq!(Streams::parse("-"), Some(Streams::default()));
        assert_eq!(Streams::parse("o-"), None);
        assert_eq!(Streams::parse("oo"), None, "twice is not a set");
        assert_eq!(Streams::parse("O"), None);
    }
}

mod command_line {
    use crate::argv::{Args, parse};

    fn parse_strs(args: &[&str]) -> Result<Args, String> {
        parse(args.iter().map(|a| a.as_bytes()))
    }

    const REQUIRED: [&str; 14] = [
        "--id",
        "c1",
        "--bundle",
        "/b",
        "--runtime",
        "runc",
        "--runtime-root",
        "/r",
        "--log",
        "/l.log",
        "--dir",
        "/d",
        "--control-socket",
        "/d/c.sock",
    ];

    #[test]
    fn the_daemons_line_in_order() {
        let args = Args {
            id: "c1".into(),
            bundle: "/b".into(),
            runtime: "runc".into(),
            runtime_root: "/r".into(),
            log_path: "/l.log".into(),
            dir: "/d".into(),
            socket: "/d/c.sock".into(),
            oom_events: Some("/cg/memory.events".into()),
            tty: true,
            stdin: true,
            stdin_once: false,
            exec_process: Some("/d/process.json".into()),
        };
        let mut expected: Vec<&str> = REQUIRED.to_vec();
        expected.extend([
            "--oom-events",
            "/cg/memory.events",
            "--exec-process",
            "/d/process.json",
            "--tty",
            "--stdin",
        ]);
        assert_eq!(args.to_args(), expected);
        assert_eq!(parse_strs(&expected), Ok(args));
    }

    #[test]
    fn only_the_required_flags() {
        let args = parse_strs(&REQUIRED).expect("complete");
        assert_eq!(args.id, "c1");
        assert_eq!(args.socket, "/d/c.sock");
        assert_eq!((args.oom_events, args.exec_process), (None, None));
        assert!(!args.tty && !args.stdin && !args.stdin_once);
    }

    #[test]
    fn switches_go_anywhere_and_values_are_taken_whole() {
        let mut line = vec!["--stdin-once"];
        line.extend(&REQUIRED[..2]);
        line.push("--tty");
        line.extend(&REQUIRED[2..]);
        line.extend(["--oom-events", "--stdin"]);
        let args = parse_strs(&line).expect("complete");
        assert!(args.stdin_once && args.tty);
        assert_eq!(
            args.oom_events.as_deref(),
            Some("--stdin"),
            "a flag's value is the next argument, whatever it looks like"
        );
        assert!(!args.stdin);
        let mut spaced = REQUIRED.to_vec();
        spaced[1] = "a b=c";
        assert_eq!(parse_strs(&spaced).map(|a| a.id), Ok("a b=c".to_string()));
    }

    #[test]
    fn what_is_missing_or_wrong_is_named() {
        let mut empty_dir = REQUIRED.to_vec();
        empty_dir[11] = "";
        assert_eq!(parse_strs(&empty_dir), Err("--dir is required".to_string()));
        assert_eq!(parse_strs(&[]), Err("--id is required".to_string()));
        let mut cut = REQUIRED.to_vec();
        cut.push("--exec-process");
        assert_eq!(
            parse_strs(&cut),
            Err("--exec-process needs a value".to_string())
        );
        let mut unknown = REQUIRED.to_vec();
        unknown.extend(["--id=c2", "x"]);
        assert_eq!(
            parse_strs(&unknown),
            Err("unknown flag --id=c2".to_string())
        );
        let not_utf8: [&[u8]; 2] = [b"--bundle", b"/b\xff"];
        assert_eq!(
            parse(not_utf8),
            Err("argument \"/b\u{fffd}\" is not UTF-8".to_string())
        );
    }
}

mod exit_record {
    use crate::files::exit_record;

    #[test]
    fn the_record_the_daemon_reads() {
        assert_eq!(
            exit_record(137, Some(9), 1_795_491_000_123_456_789, true),
            r#"{"exit_code":137,"signal":9,"finished_at_ns":1795491000123456789,"oom_killed":true}"#
        );
        assert_eq!(
            exit_record(0, None, 0, false),
            r#"{"exit_code":0,"signal":null,"finished_at_ns":0,"oom_killed":false}"#
        );
        assert_eq!(
            exit_record(-1, None, -5, false),
            r#"{"exit_code":-1,"signal":null,"finished_at_ns":-5,"oom_killed":false}"#
        );
    }
}

mod runtime_log {
    use crate::runc_log::last_error;

    #[test]
    fn escapes_and_stray_surrogates() {
        let log = r#"{"level":"error","msg":"a \\ b \/ c \"d\" \u0041"}"#;
        assert_eq!(last_error(log).as_deref(), Some(r#"a \ b / c "d" A"#));
        let lone = r#"{"level":"error","msg":"x \ud800 y"}"#;
        assert_eq!(last_error(lone).as_deref(), Some("x \u{fffd} y"));
        let unterminated = r#"{"level":"error","msg":"no end"#;
        assert_eq!(last_error(unterminated), None);
    }

    #[test]
    fn a_cause_already_said_is_not_repeated() {
        let log = concat!(
            r#"{"level":"ERROR","message":"mount failed","err":"EPERM"}"#,
            "\n",
            r#"{"level":"ERROR","message":"create failed: mount failed: EPERM"}"#,
            "\n",
        );
        assert_eq!(
            last_error(log).as_deref(),
            Some("create failed: mount failed: EPERM")
        );
    }
}

mod oom_events {
    use crate::cgroup::oom_killed;

    #[test]
    fn v1_and_v2_files() {
        let v2 = "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert!(oom_killed(v2));
        assert!(!oom_killed("low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n"));
        // v1: `oom_kill_disable 1` is a setting, not a count.
        assert!(!oom_killed("oom_kill_disable 1\nunder_oom 0\noom_kill 0\n"));
        assert!(oom_killed("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"));
        assert!(!oom_killed("oom_kill_disable 1\nunder_oom 1\n"), "no count");
        assert!(!oom_killed(""));
        assert!(!oom_killed("oom_kill lots\n"));
    }
}

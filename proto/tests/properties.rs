//! Short runs of the properties the fuzz targets check (`fuzz/`, `scripts/fuzz`): codecs
//! and parsers on arbitrary bytes cut at arbitrary points, the call model on arbitrary
//! operation sequences. The checks themselves are in `ctid_proto::fuzzing`.

use ctid_proto::fuzzing::{
    check_agi, check_ami, check_cti, check_directory, check_request, ops_from_bytes, run_call_model,
};
use proptest::collection::vec;
use proptest::prelude::*;

/// Bytes that look like protocol traffic: bits of lines, separators, junk, and now and
/// then a long run (AGI's fixed 16 KiB limits are reached only by those).
fn wire() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        4 => prop::sample::select(vec![
            &b"\r\n"[..], b"\n", b"\r", b": ", b"Event: Hangup", b"Response: Success",
            b"agi_network_script: x?a=%41&b", b"agi_arg_1: y", b"200 result=1 (z)",
            b"520-Usage", b"520 End", b"HANGUP", b"{\"class\":\"x\",\"commandid\":1}",
            b"Asterisk Call Manager/11.0.0", b"\xff\xe9",
        ])
        .prop_map(<[u8]>::to_vec),
        3 => vec(any::<u8>(), 0..12),
        1 => (any::<u8>(), 0usize..20_000).prop_map(|(b, n)| vec![b; n]),
    ];
    vec(piece, 0..24).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn ami_frames_do_not_depend_on_how_bytes_arrive(
        banner: bool,
        max in prop_oneof![1usize..200, Just(1 << 20)],
        wire in wire(),
        cuts in vec(any::<u8>(), 0..4),
    ) {
        check_ami(banner, max, &wire, &cuts);
    }

    #[test]
    fn agi_frames_do_not_depend_on_how_bytes_arrive(
        wire in wire(),
        cuts in vec(any::<u8>(), 0..4),
    ) {
        check_agi(&wire, &cuts);
    }

    #[test]
    fn cti_lines_do_not_depend_on_how_bytes_arrive(
        max in prop_oneof![1usize..200, Just(64 << 10)],
        wire in wire(),
        cuts in vec(any::<u8>(), 0..4),
    ) {
        check_cti(max, &wire, &cuts);
    }

    #[test]
    fn requests_parse_or_say_why_not(line in prop_oneof![
        vec(any::<u8>(), 0..64),
        "\\{(\"(class|commandid|x)\": ?(\"[a-z]*\"|[0-9]|null|\\[\\]|\\{\\}),?){0,4}\\}?"
            .prop_map(String::into_bytes),
    ]) {
        check_request(&line);
    }

    #[test]
    fn directories_load_or_list_their_problems(text in prop_oneof![
        ".{0,64}",
        "(\\[\\[(contexts|users|queues)\\]\\]\n|(name|id|login|password|context|dialplan|line) = \
         (\"[a-z]{0,3}\"|[0-9]|\\[\"[a-z]\"\\]|\\{ interface = \"i\", number = \"1\", context = \"a\", dialplan = \"d\" \\})\n){0,12}",
    ]) {
        check_directory(&text);
    }

    #[test]
    fn the_call_model_keeps_its_invariants(bytes in vec(any::<u8>(), 0..4096)) {
        run_call_model(&ops_from_bytes(&bytes));
    }
}

"""The one table of mount options (issue 21 step 5): every option is reachable as ``-o`` and
as a flag with the same value, ``megafs mount --help`` shows each help text in both lists,
``mount.megafs`` (fstab) lines give the same values as the flags, and ``MountConfig`` takes its
defaults and fields from the table."""
from __future__ import annotations

import dataclasses
import re

import pytest

from megafs.cli import fstab
from megafs.cli.main import build_parser, parse
from megafs.cli.mount import apply_options
from megafs.errors import MegafsError
from megafs.mount.options import MOUNT_OPTIONS, describe_options, split_options
from megafs.mount.runtime import MountConfig

# One good value per option, as typed, and what it means; a switch has None as its text.
# Adding an option to the table without a sample here fails test_every_option_has_a_sample.
SAMPLES: dict[str, tuple[str | None, object]] = {
    "api": ("http://127.0.0.1:9/", "http://127.0.0.1:9/"),
    "local": (None, True),
    "local_port": ("8733", 8733),
    "state_dir": ("/srv/megafs-state", "/srv/megafs-state"),
    "session": ("/srv/session.json", "/srv/session.json"),
    "account": ("ann@example.com", "ann@example.com"),
    "foreground": (None, True),
    "debug": (None, True),
    "link_timeout": ("60", 60.0),
    "uploads": ("8", 8),
    "upload_hold": ("0.5", 0.5),
    "connections": ("2", 2),
    "allow_other": (None, True),
    "show_links": (None, True),
    "fsync": ("LOCAL", "local"),
    "staging_max": ("20G", 20 << 30),
    "nonempty": (None, True),
    "log_file": ("/srv/mount.log", "/srv/mount.log"),
    "log_level": ("debug", "DEBUG"),
    "link": ("https://mega.nz/folder/AbCdEf01#" + "A" * 22,
             "https://mega.nz/folder/AbCdEf01#" + "A" * 22),
}
NEEDS = {"local_port": ["--local"]}     # options that make sense only with another one


def _mounted(argv: list[str]):
    args = parse(["mount", "/mnt/x", *argv])
    fuse = apply_options(args)
    return args, fuse


def _flat(text: str) -> str:
    return re.sub(r"\s+", "", text)        # argparse wraps help text, at hyphens too


def test_every_option_has_a_sample():
    assert set(SAMPLES) == set(MOUNT_OPTIONS)


@pytest.mark.parametrize("name", sorted(MOUNT_OPTIONS))
def test_each_option_is_the_same_as_flag_and_as_o(name):
    opt = MOUNT_OPTIONS[name]
    text, meant = SAMPLES[name]
    assert opt.flag_names, name                  # every option has a flag
    for flag in opt.flag_names:
        args, fuse = _mounted(NEEDS.get(name, []) + [flag] + ([text] if text else []))
        assert getattr(args, name) == meant, (name, flag)
        if opt.libfuse:
            assert fuse[name] is True
    if not opt.in_o:
        with pytest.raises(MegafsError, match="unknown mount option"):
            _mounted(["-o", name])
        return
    item = name if text is None else "%s=%s" % (name, text)
    args, fuse = _mounted(NEEDS.get(name, []) + ["-o", item])
    assert getattr(args, name) == meant
    if opt.libfuse:
        assert fuse[name] is True
    if "_" in name:                               # -o with dashes, as the flag spells it
        args, _ = _mounted(NEEDS.get(name, []) + ["-o", item.replace("_", "-")])
        assert getattr(args, name) == meant


def test_a_flag_wins_over_o_and_defaults_come_from_the_table():
    args, _ = _mounted(["--uploads", "3", "-o", "uploads=9,connections=5"])
    assert args.uploads == 3 and args.connections == 5
    args, fuse = _mounted([])
    for opt in MOUNT_OPTIONS.values():
        if opt.common:
            continue                   # --log-file/--log-level: None means "decided later"
        assert getattr(args, opt.name) == opt.default, opt.name
    assert fuse == {}


def test_bad_values_are_refused_in_the_same_words_as_flag_and_as_o(capsys):
    for name, bad in (("uploads", "abc"), ("link_timeout", "-5"), ("local_port", "0"),
                      ("staging_max", "lots"), ("fsync", "sometimes"), ("log_level", "LOUD"),
                      ("upload_hold", "-1"), ("upload_hold", "61")):
        opt = MOUNT_OPTIONS[name]
        with pytest.raises(MegafsError) as caught:
            _mounted(["-o", "%s=%s" % (name, bad)])
        reason = str(caught.value).split(": ", 1)[1]
        with pytest.raises(SystemExit):
            parse(["mount", "/mnt/x", opt.flag_names[0], bad])
        err = capsys.readouterr().err
        assert reason in err and "%s: " % opt.flag_names[0] in err, (name, err)


def test_options_that_exclude_each_other():
    for argv in (["-o", "api=http://127.0.0.1:9/,local"], ["--api", "http://127.0.0.1:9/",
                                                           "-o", "local"]):
        with pytest.raises(MegafsError, match="either an API URL or local"):
            _mounted(argv)
    with pytest.raises(MegafsError, match="local_port/--local-port is for --local"):
        _mounted(["-o", "local_port=8733"])
    link = SAMPLES["link"][0]
    for argv, others in ((["--account", "a@b.c"], "account"), (["-o", "session=/x"], "session"),
                         (["--local", "--session", "/x"], "session/local")):
        with pytest.raises(MegafsError, match="either link or %s, not both" % others):
            _mounted(["--link", str(link)] + argv)
    args, fuse = _mounted(["-o", "link=%s" % link])
    assert fuse == {"ro": True}                   # the kernel mount is read-only too
    with pytest.raises(MegafsError, match="not a MEGA folder link"):
        _mounted(["--link", "https://mega.nz/file/AbCdEf01#" + "A" * 43])


def test_help_shows_every_help_text_as_flag_and_as_o():
    sub = build_parser()._subparsers._group_actions[0].choices     # type: ignore[union-attr]
    page = _flat(sub["mount"].format_help())
    flags_part, o_part = page.split(_flat("-o options (comma separated"), 1)
    for opt in MOUNT_OPTIONS.values():
        assert _flat(opt.help_text()) in flags_part, opt.name
        for flag in opt.flag_names:
            assert flag in flags_part, flag
        if opt.in_o:
            left = opt.name + ("=" + opt.metavar if opt.metavar else "")
            assert _flat(left + " " + opt.help_text()) in o_part, opt.name
    assert _flat(describe_options()) in page


def test_fstab_lines_give_what_the_flags_give():
    """One ``mount.megafs`` line with every -o option, against the same settings as flags."""
    for source, first in (("local", ["local_port"]), ("http://127.0.0.1:9/", [])):
        names = [n for n, o in MOUNT_OPTIONS.items()
                 if o.in_o and n not in ("api", "local", "link")
                 and (n != "local_port" or first)]
        items = [n if SAMPLES[n][0] is None else "%s=%s" % (n, SAMPLES[n][0]) for n in names]
        argv, fake = fstab.translate([source, "/mnt/x", "-o", ",".join(items + ["_netdev",
                                                                                "x-systemd.a"])])
        assert not fake and argv[:2] == ["mount", "/mnt/x"]
        by_o = parse(argv)
        fuse = apply_options(by_o)
        flags = [f for n in names for f in [MOUNT_OPTIONS[n].flag_names[0]] +
                 ([SAMPLES[n][0]] if SAMPLES[n][0] else [])]
        by_flags, _ = _mounted(flags + (["--local"] if source == "local" else ["--api", source]))
        for name in names:
            assert getattr(by_o, name) == getattr(by_flags, name) == SAMPLES[name][1], name
        assert fuse == {"allow_other": True, "debug": True}
        assert (by_o.local, by_o.api) == ((True, None) if source == "local" else (False, source))


def test_a_folder_link_as_the_fstab_source_is_a_read_only_link_mount():
    link = str(SAMPLES["link"][0])
    argv, _ = fstab.translate([link, "/mnt/x", "-o", "state_dir=/srv/s,_netdev"])
    args = parse(argv)
    assert apply_options(args) == {"ro": True} and args.link == link and args.api is None


def test_mount_config_fields_and_defaults_come_from_the_table():
    fields = {f.name: f for f in dataclasses.fields(MountConfig)}
    mapped = {o.config_field: o for o in MOUNT_OPTIONS.values() if o.config_field}
    assert set(fields) - set(mapped) == {"state_dir", "poll_timeout", "mountpoint"}
    for name, opt in mapped.items():
        assert fields[name].default == opt.default, name
    args, _ = _mounted(["--uploads", "3", "-o", "session=/srv/s.json,fsync=local,show_links"])
    cfg = MountConfig.from_options(vars(args), state_dir="/srv/state", mountpoint="/mnt/x")
    assert (cfg.uploads, cfg.session_file, cfg.fsync, cfg.show_links) == (3, "/srv/s.json",
                                                                          "local", True)
    assert cfg.state_dir == "/srv/state" and cfg.connections == 4


def test_split_options_keeps_libfuse_options_apart():
    own, fuse = split_options("uploads=2,ro,noatime,max_read=131072,noauto,comment=x")
    assert own == {"uploads": 2} and fuse == {"ro": True, "noatime": True, "max_read": "131072"}

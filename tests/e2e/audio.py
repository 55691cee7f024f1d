"""WAV reading and tone detection (Goertzel per 100 ms window).

pjsua2 records 16 kHz mono 16-bit WAV and writes nothing while no media
arrives, so judge content per window, never by file length. A missing or
empty file is treated as zero windows (silent, no tone).
"""
import math
import os
import struct
import subprocess
import wave

WINDOW_S = 0.1
# A window whose RMS is below this (in 16-bit sample units, ~ -50 dBFS) is silence.
SILENCE_RMS = 100.0
# A window "has" a tone when this share of its energy sits in the tone's bin.
TONE_SHARE = 0.5


class Wav:
    def __init__(self, rate, samples, path=""):
        self.rate = rate
        self.samples = samples
        self.path = path

    @property
    def duration(self):
        return len(self.samples) / float(self.rate) if self.rate else 0.0

    def __repr__(self):
        return "Wav(%s, %d Hz, %.2fs)" % (self.path, self.rate, self.duration)


def read_wav(path):
    """Mono 16-bit PCM samples. Reads the data chunk to EOF even when the
    header sizes were never finalised."""
    if not os.path.exists(path) or os.path.getsize(path) < 44:
        return Wav(16000, [], path)
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("%s: not a WAV file" % path)
    pos = 12
    rate, channels, bits = 16000, 1, 16
    pcm = b""
    while pos + 8 <= len(data):
        cid = data[pos : pos + 4]
        size = struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        body = data[pos + 8 : pos + 8 + size] if cid != b"data" else None
        if cid == b"fmt ":
            fmt, channels, rate = struct.unpack("<HHI", body[:8])
            bits = struct.unpack("<H", body[14:16])[0]
            if fmt != 1 or bits != 16:
                raise ValueError("%s: only 16-bit PCM supported (fmt=%d bits=%d)" % (path, fmt, bits))
        elif cid == b"data":
            end = pos + 8 + size
            if size == 0 or end > len(data):
                end = len(data)  # unfinalised header: read to EOF
            pcm = data[pos + 8 : end]
            break
        pos += 8 + size + (size & 1)
    n = len(pcm) // 2
    samples = list(struct.unpack("<%dh" % n, pcm[: 2 * n]))
    if channels > 1:
        samples = samples[::channels]
    return Wav(rate, samples, path)


class WavInfo:
    """A parsed 16-bit PCM WAV of any channel count: one ``Wav`` per channel, and whether the
    header's sizes agree with the file (a finalised or repaired file)."""

    def __init__(self, rate, channels, chans, riff_size, data_size, data_bytes, file_size,
                 path=""):
        self.rate = rate
        self.channels = channels
        self.chans = chans
        self.riff_size = riff_size
        self.data_size = data_size
        self.data_bytes = data_bytes
        self.file_size = file_size
        self.path = path

    @property
    def header_consistent(self):
        return self.riff_size == self.file_size - 8 and self.data_size == self.data_bytes

    @property
    def duration(self):
        return self.chans[0].duration if self.chans else 0.0

    def __repr__(self):
        return "WavInfo(%s, %d Hz, %d ch, %.2fs, riff=%d data=%d/%d file=%d)" % (
            self.path, self.rate, self.channels, self.duration, self.riff_size, self.data_size,
            self.data_bytes, self.file_size)


def read_wav_channels(path_or_bytes, path=""):
    """Parses a 16-bit PCM WAV (path or bytes) strictly: RIFF/WAVE, a ``fmt `` chunk, a
    ``data`` chunk; samples are de-interleaved per channel. Raises ValueError when it is not
    such a file."""
    if isinstance(path_or_bytes, (bytes, bytearray)):
        data = bytes(path_or_bytes)
    else:
        path = path_or_bytes
        with open(path, "rb") as f:
            data = f.read()
    if len(data) < 44 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("%s: not a RIFF/WAVE file (%d bytes)" % (path, len(data)))
    riff_size = struct.unpack("<I", data[4:8])[0]
    pos = 12
    fmt = None
    while pos + 8 <= len(data):
        cid = data[pos : pos + 4]
        size = struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        if cid == b"fmt ":
            body = data[pos + 8 : pos + 8 + size]
            tag, channels, rate = struct.unpack("<HHI", body[:8])
            bits = struct.unpack("<H", body[14:16])[0]
            if tag != 1 or bits != 16:
                raise ValueError("%s: not 16-bit PCM (fmt=%d bits=%d)" % (path, tag, bits))
            fmt = (channels, rate)
        elif cid == b"data":
            if fmt is None:
                raise ValueError("%s: data before fmt" % path)
            channels, rate = fmt
            pcm = data[pos + 8 : pos + 8 + size]
            n = len(pcm) // (2 * channels) * channels
            samples = struct.unpack("<%dh" % n, pcm[: 2 * n])
            chans = [Wav(rate, list(samples[c::channels]), "%s[%d]" % (path, c))
                     for c in range(channels)]
            return WavInfo(rate, channels, chans, riff_size, size, len(data) - pos - 8,
                           len(data), path)
        pos += 8 + size + (size & 1)
    raise ValueError("%s: no data chunk" % path)


def silent_runs(w, win=WINDOW_S):
    """(start_s, length_s) of each run of consecutive silent windows."""
    w = _as_wav(w)
    runs = []
    start = None
    ws = windows(w, win=win)
    for i, x in enumerate(ws):
        quiet = rms(x) < SILENCE_RMS
        if quiet and start is None:
            start = i
        elif not quiet and start is not None:
            runs.append((start * win, (i - start) * win))
            start = None
    if start is not None:
        runs.append((start * win, (len(ws) - start) * win))
    return runs


def _as_wav(w):
    return w if isinstance(w, Wav) else read_wav(w)


def goertzel_power(x, rate, freq):
    w = 2.0 * math.pi * freq / rate
    coeff = 2.0 * math.cos(w)
    s1 = s2 = 0.0
    for v in x:
        s = v + coeff * s1 - s2
        s2 = s1
        s1 = s
    return s1 * s1 + s2 * s2 - coeff * s1 * s2


def windows(w, t0=None, t1=None, win=WINDOW_S):
    """Sample lists of consecutive ``win``-second windows within [t0, t1)."""
    w = _as_wav(w)
    n = int(w.rate * win)
    start = int((t0 or 0.0) * w.rate)
    end = len(w.samples) if t1 is None else min(len(w.samples), int(t1 * w.rate))
    out = []
    i = start
    while i + n <= end:
        out.append(w.samples[i : i + n])
        i += n
    return out


def rms(x):
    return math.sqrt(sum(v * v for v in x) / len(x)) if x else 0.0


def tone_share(x, rate, freq):
    """Fraction of the window's energy at ``freq`` (1.0 for a pure on-bin tone)."""
    energy = sum(v * v for v in x)
    if energy <= 0:
        return 0.0
    return goertzel_power(x, rate, freq) / (len(x) * energy / 2.0)


def window_report(w, freqs, t0=None, t1=None):
    """Per window: (start_s, rms, {freq: share}) — for failure messages."""
    w = _as_wav(w)
    out = []
    for i, x in enumerate(windows(w, t0, t1)):
        out.append(
            (
                round((t0 or 0) + i * WINDOW_S, 2),
                round(rms(x), 1),
                {f: round(tone_share(x, w.rate, f), 2) for f in freqs},
            )
        )
    return out


def tone_fraction(w, freq, t0=None, t1=None):
    """Share of windows in [t0, t1) that are loud and dominated by ``freq``.
    0.0 when there are no windows."""
    w = _as_wav(w)
    ws = windows(w, t0, t1)
    if not ws:
        return 0.0
    hits = sum(
        1 for x in ws if rms(x) >= SILENCE_RMS and tone_share(x, w.rate, freq) >= TONE_SHARE
    )
    return hits / float(len(ws))


def has_tone(w, freq, t0=None, t1=None, min_fraction=0.6):
    return tone_fraction(w, freq, t0, t1) >= min_fraction


def tone_ratio(w, freq, other_freq, t0=None, t1=None):
    """Goertzel power at ``freq`` over power at ``other_freq``, summed over
    windows (A hears B's tone: ratio >> 1). 0.0 for no windows."""
    w = _as_wav(w)
    pf = po = 0.0
    for x in windows(w, t0, t1):
        pf += goertzel_power(x, w.rate, freq)
        po += goertzel_power(x, w.rate, other_freq)
    if pf == 0.0:
        return 0.0
    return pf / (po + 1e-9)


def silent(w, t0=None, t1=None, max_loud_fraction=0.1):
    """True when (almost) no window in [t0, t1) is louder than silence.
    No windows at all (nothing recorded) counts as silent."""
    w = _as_wav(w)
    ws = windows(w, t0, t1)
    if not ws:
        return True
    loud = sum(1 for x in ws if rms(x) >= SILENCE_RMS)
    return loud / float(len(ws)) <= max_loud_fraction


def make_tone(path, freq, seconds=30, rate=8000, vol=0.5):
    subprocess.run(
        ["sox", "-n", "-r", str(rate), "-c", "1", "-b", "16", path, "synth", str(seconds),
         "sine", str(freq), "vol", str(vol)],
        check=True,
    )
    return path


def make_silence(path, seconds=5, rate=8000):
    subprocess.run(
        ["sox", "-n", "-r", str(rate), "-c", "1", "-b", "16", path, "trim", "0", str(seconds)],
        check=True,
    )
    return path


def write_wav(path, samples, rate=16000):
    with wave.open(path, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(struct.pack("<%dh" % len(samples), *samples))
    return path

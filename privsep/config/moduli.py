"""Diffie-Hellman groups, pure: the fixed MODP groups of RFC 2409 and
RFC 3526, and the moduli file of group exchange (moduli(5)) with sshd's
rules for choosing from it.  The monitor reads the file and chooses (as
OpenSSH's MONITOR_REQ_MODULI); the net-child, chrooted, cannot read it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

#: The sizes group exchange may use (OpenSSH's DH_GRP_MIN, DH_GRP_MAX).
GEX_MIN_BITS = 2048
GEX_MAX_BITS = 8192

#: moduli(5): type 2 is a safe prime; test flag 1 means "found composite".
MODULI_TYPE_SAFE = 2
MODULI_TESTS_COMPOSITE = 0x01

#: The fixed groups, generator 2: group 2 of RFC 2409 ("group1"), groups
#: 14, 16 and 18 of RFC 3526.
GROUP1_P = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22"
    "514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6"
    "F44C42E9A637ED6B0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE65381"
    "FFFFFFFFFFFFFFFF", 16)
GROUP14_P = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22"
    "514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6"
    "F44C42E9A637ED6B0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3D"
    "C2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB"
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3BE39E772C180E8603"
    "9B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA956AE515D2261898FA0510"
    "15728E5A8AACAA68FFFFFFFFFFFFFFFF", 16)
GROUP16_P = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22"
    "514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6"
    "F44C42E9A637ED6B0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3D"
    "C2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB"
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3BE39E772C180E8603"
    "9B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA956AE515D2261898FA0510"
    "15728E5A8AAAC42DAD33170D04507A33A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7D"
    "B3970F85A6E1E4C7ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864"
    "D87602733EC86A64521F2B18177B200CBBE117577A615D6C770988C0BAD946E208E24FA074E5AB31"
    "43DB5BFCE0FD108E4B82D120A92108011A723C12A787E6D788719A10BDBA5B2699C327186AF4E23C"
    "1A946834B6150BDA2583E9CA2AD44CE8DBBBC2DB04DE8EF92E8EFC141FBECAA6287C59474E6BC05D"
    "99B2964FA090C3A2233BA186515BE7ED1F612970CEE2D7AFB81BDD762170481CD0069127D5B05AA9"
    "93B4EA988D8FDDC186FFB7DC90A6C08F4DF435C934063199FFFFFFFFFFFFFFFF", 16)
GROUP18_P = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22"
    "514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6"
    "F44C42E9A637ED6B0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3D"
    "C2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB"
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3BE39E772C180E8603"
    "9B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA956AE515D2261898FA0510"
    "15728E5A8AAAC42DAD33170D04507A33A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7D"
    "B3970F85A6E1E4C7ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864"
    "D87602733EC86A64521F2B18177B200CBBE117577A615D6C770988C0BAD946E208E24FA074E5AB31"
    "43DB5BFCE0FD108E4B82D120A92108011A723C12A787E6D788719A10BDBA5B2699C327186AF4E23C"
    "1A946834B6150BDA2583E9CA2AD44CE8DBBBC2DB04DE8EF92E8EFC141FBECAA6287C59474E6BC05D"
    "99B2964FA090C3A2233BA186515BE7ED1F612970CEE2D7AFB81BDD762170481CD0069127D5B05AA9"
    "93B4EA988D8FDDC186FFB7DC90A6C08F4DF435C93402849236C3FAB4D27C7026C1D4DCB2602646DE"
    "C9751E763DBA37BDF8FF9406AD9E530EE5DB382F413001AEB06A53ED9027D831179727B0865A8918"
    "DA3EDBEBCF9B14ED44CE6CBACED4BB1BDB7F1447E6CC254B332051512BD7AF426FB8F401378CD2BF"
    "5983CA01C64B92ECF032EA15D1721D03F482D7CE6E74FEF6D55E702F46980C82B5A84031900B1C9E"
    "59E7C97FBEC7E8F323A97A7E36CC88BE0F1D45B7FF585AC54BD407B22B4154AACC8F6D7EBF48E1D8"
    "14CC5ED20F8037E0A79715EEF29BE32806A1D58BB7C5DA76F550AA3D8A1FBFF0EB19CCB1A313D55C"
    "DA56C9EC2EF29632387FE8D76E3C0468043E8F663F4860EE12BF2D5B0B7474D6E694F91E6DBE1159"
    "74A3926F12FEE5E438777CB6A932DF8CD8BEC4D073B931BA3BC832B68D9DD300741FA7BF8AFC47ED"
    "2576F6936BA424663AAB639C5AE4F5683423B4742BF1C978238F16CBE39D652DE3FDB8BEFC848AD9"
    "22222E04A4037C0713EB57A81A23F0C73473FC646CEA306B4BCBC8862F8385DDFA9D4B7FA2C087E8"
    "79683303ED5BDD3A062B3CF5B3A278A66D2A13F83F44F82DDF310EE074AB6A364597E899A0255DC1"
    "64F31CC50846851DF9AB48195DED7EA1B1D510BD7EE74D73FAF36BC31ECFA268359046F4EB879F92"
    "4009438B481C6CD7889A002ED5EE382BC9190DA6FC026E479558E4475677E9AA9E3050E2765694DF"
    "C81F56E880B96E7160C980DD98EDD3DFFFFFFFFFFFFFFFFF", 16)
GENERATOR = 2


@dataclass(frozen=True)
class Modulus:
    """One group of the moduli file: ``bits`` is the size of ``prime``
    (the file lists one less: the size of (p-1)/2)."""

    bits: int
    generator: int
    prime: int


class ModuliLineError(ValueError):
    """A line sshd would skip, with its words (``moduli:LINE: ...``)."""


def parse_line(line: str, lineno: int) -> Modulus | None:
    """The group on one line of a moduli file, None for a comment or blank
    line; ModuliLineError for a line sshd's parse_prime refuses."""
    words = line.split()
    if not words or words[0].startswith("#"):
        return None

    def bad(what: str) -> ModuliLineError:
        return ModuliLineError(f"moduli:{lineno}: {what}")

    if len(words) < 7:
        raise bad("truncated")
    if len(words) > 7:
        raise bad("truncated")  # sshd: fields left over after the prime
    _time, kind, tests, tries, size, gen, prime = words
    if not kind.isdigit() or int(kind) != MODULI_TYPE_SAFE:
        raise bad(f"type is not {MODULI_TYPE_SAFE}")
    if not tests.isdigit() or int(tests) > 0x1F or int(tests) & MODULI_TESTS_COMPOSITE \
            or not int(tests) & ~MODULI_TESTS_COMPOSITE:
        raise bad("invalid moduli tests flag")
    if not tries.isdigit() or not 0 < int(tries) <= 1 << 30:
        raise bad("invalid primality trial count")
    if not size.isdigit() or not 0 < int(size) <= 64 * 1024:
        raise bad("invalid prime length")
    try:
        generator = int(gen, 16)
    except ValueError:
        raise bad("could not parse generator value") from None
    try:
        modulus = int(prime, 16)
    except ValueError:
        raise bad("could not parse prime value") from None
    bits = int(size) + 1  # the listed size is that of (p-1)/2
    if modulus.bit_length() != bits:
        raise bad(f"prime has wrong size: actual {modulus.bit_length()} listed {bits - 1}")
    if generator <= 1:
        raise bad("generator is invalid")
    return Modulus(bits, generator, modulus)


def parse(lines: Iterable[str], errors: list[str] | None = None) -> list[Modulus]:
    """Every usable group of a moduli file; sshd's words for each line it
    skips go to ``errors``."""
    groups = []
    for lineno, line in enumerate(lines, 1):
        try:
            group = parse_line(line, lineno)
        except ModuliLineError as exc:
            if errors is not None:
                errors.append(str(exc))
            continue
        if group is not None:
            groups.append(group)
    return groups


def best_size(groups: list[Modulus], min_bits: int, want_bits: int, max_bits: int) -> int | None:
    """sshd's choose_dh: among the sizes within [min, max], the smallest one
    at least ``want``, else the largest one below it."""
    best = None
    for g in groups:
        if not min_bits <= g.bits <= max_bits:
            continue
        if best is None or (want_bits < g.bits < best) or (best < g.bits and best < want_bits):
            best = g.bits
    return best


def choose(groups: list[Modulus], min_bits: int, want_bits: int, max_bits: int,
           pick: Callable[[int], int]) -> Modulus | None:
    """One group of the best size, ``pick(n)`` choosing among the n of them
    (uniformly at random in the monitor, so that clients do not all share
    one prime); None when no size fits."""
    size = best_size(groups, min_bits, want_bits, max_bits)
    if size is None:
        return None
    candidates = [g for g in groups if g.bits == size]
    return candidates[pick(len(candidates))]


def fallback(max_bits: int) -> Modulus:
    """sshd's dh_new_group_fallback: a fixed group no larger than asked."""
    if max_bits < 3072:
        return Modulus(2048, GENERATOR, GROUP14_P)
    if max_bits < 6144:
        return Modulus(4096, GENERATOR, GROUP16_P)
    return Modulus(8192, GENERATOR, GROUP18_P)


def gex_request_error(min_bits: int, want_bits: int, max_bits: int) -> str | None:
    """Why the monitor refuses a group-exchange request, or None.  The
    net-child sends sizes already brought into [2048, 8192] (kexgexs.c), so
    anything else comes from a child that is not ours."""
    if not (min_bits <= want_bits <= max_bits):
        return f"bad parameters: {min_bits} {want_bits} {max_bits}"
    if min_bits < GEX_MIN_BITS or max_bits > GEX_MAX_BITS:
        return f"bad parameters: {min_bits} {want_bits} {max_bits} (outside " \
               f"{GEX_MIN_BITS}..{GEX_MAX_BITS})"
    return None

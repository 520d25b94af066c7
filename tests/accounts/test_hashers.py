from django.contrib.auth.hashers import Argon2PasswordHasher, check_password

from apps.accounts.hashers import OwaspArgon2PasswordHasher


def test_passwords_are_hashed_with_argon2id_at_owasp_parameters() -> None:
    encoded = OwaspArgon2PasswordHasher().encode("Correct-Horse-42", OwaspArgon2PasswordHasher().salt())
    assert encoded.startswith("argon2$argon2id$v=19$m=19456,t=2,p=1$")
    assert OwaspArgon2PasswordHasher().verify("Correct-Horse-42", encoded)
    assert not OwaspArgon2PasswordHasher().verify("wrong", encoded)


def test_hashes_made_with_djangos_defaults_still_verify_and_are_upgraded() -> None:
    old = Argon2PasswordHasher().encode("Correct-Horse-42", Argon2PasswordHasher().salt())
    hasher = OwaspArgon2PasswordHasher()
    assert hasher.verify("Correct-Horse-42", old)
    assert hasher.must_update(old)
    assert check_password("Correct-Horse-42", old)

from django.contrib.auth.hashers import Argon2PasswordHasher


class OwaspArgon2PasswordHasher(Argon2PasswordHasher):
    """Argon2id with OWASP's recommended minimum: 19 MiB of memory, 2 passes, 1 lane.

    Django's defaults (100 MiB, 8 lanes) cost about 0.2 s of a core and 100 MiB
    per login here; on small web workers that turns a burst of logins, or of
    guesses, into a denial of service. Hashes keep the "argon2" algorithm name
    and carry their own parameters, so older hashes still verify and are
    upgraded on the next successful login.
    """

    time_cost = 2
    memory_cost = 19 * 1024
    parallelism = 1

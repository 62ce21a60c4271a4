"""What a type checker sees of memoized functions (checked by tests/test_typing.py)."""

from persistmemo import Store, memo


@memo
def load(path: str, *, columns: tuple[str, ...] = ()) -> dict[str, int]:
    return {}


@memo(ttl=3600, ignore=["verbose"])
def fetch(url: str, verbose: bool = False) -> dict[str, str]:
    return {}


@memo
async def get(url: str) -> int:
    return 1


class Model:
    def __persistmemo_key__(self) -> str:
        return "m"

    @memo
    def predict(self, x: int) -> str:
        return str(x)


reveal_type(load("x"))
reveal_type(fetch.key("u"))
reveal_type(load.cache_info().hits)
reveal_type(Model().predict(1))
reveal_type(Store("/tmp/x").memo)
load(1)  # expected: error, wrong argument type
fetch("u", verbose="yes")  # expected: error, wrong argument type


async def main() -> None:
    reveal_type(await get("u"))

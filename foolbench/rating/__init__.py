"""Would a person recognise it? People's ratings of champions, beside the look-alike proxy.

The paper's claim is that its fooling images are unrecognisable to people. `foolbench rate` puts
that to people: one image at a time, champions mixed with real images of the same classes, each
with its target label, three foils and "none of these" (`deck`). Answers go to ratings.csv
(`store`) through a page served on this machine (`server`) or a self-contained page whose CSV is
imported later (`page`); `summary` says which champions people recognised, whose answers count,
and how well the look-alike judge agrees with people.
"""

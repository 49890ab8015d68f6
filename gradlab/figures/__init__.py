"""The figures of ``gradlab plot``, by family: ``run`` (one run), ``compare`` (several runs),
``phase`` (the phase diagram), with what they share in ``common``. ``gradlab.plots`` draws
and saves them; matplotlib is imported only from here.
"""
